"""Fixed-window request counters in the application's own database.

Why not Django's cache: the database cache keeps 300 entries and culls a
third when full (a busy minute resets other clients' counters), increments
with a read and a write (concurrent requests both read 19 and both pass a
limit of 20), and needs `createcachetable`, a step `migrate` does not run.

Here each request is one statement, `INSERT … ON CONFLICT DO UPDATE SET
count = count + 1 RETURNING count`: the database serialises the increments on
the row, so every gunicorn worker and every replica shares one exact count.
The table comes from a migration, and the same SQL runs on PostgreSQL and on
SQLite (3.35+). If the statement fails, the request is let through and a
warning is logged: a throttle must never cost an enrollment.
"""

import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import DatabaseError, connection, transaction

from outbox_worker.logevents import log_event

from .models import ThrottleCounter

logger = logging.getLogger("backend.throttle")

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Each process deletes expired counters at most this often (seconds).
_PURGE_EVERY = 60.0
_last_purge = 0.0


def _now() -> float:  # A seam for tests: a window boundary must not fall inside one.
    return time.time()


@dataclass(frozen=True)
class Rate:
    limit: int
    period_seconds: int

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """Read "20/min", "5/s", "100/hour", "1000/day" (the settings validate the shape)."""
        count, period = text.split("/", 1)
        return cls(limit=int(count), period_seconds=_PERIODS[period[0]])


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_seconds: int


def client_group(address: str) -> str:
    """Return the unit a client is counted as: an IPv4 address, or an IPv6 /64.

    An IPv6 host usually gets a whole /64 and can pick a new address in it
    for every request, so the /64 is the client. IPv4-mapped IPv6 addresses
    count as the IPv4 address they carry.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def throttle_hit(*, scope: str, client: str, rate: Rate, now: float | None = None) -> Decision:
    """Count one request of `client` in `scope` and say whether it is within `rate`.

    Fails open: when the counter cannot be written (table missing, database
    error), the request is allowed and `throttle.store_unavailable` is logged.
    """
    now = _now() if now is None else now
    window_start = math.floor(now / rate.period_seconds) * rate.period_seconds
    window_end = window_start + rate.period_seconds
    bucket = f"{scope}:{client_group(client)}:{window_start}"[:200]
    try:
        count = _increment(bucket=bucket, expires_at=datetime.fromtimestamp(window_end, tz=UTC))
    except DatabaseError as exc:
        log_event(logger, logging.WARNING, "throttle.store_unavailable", scope=scope, error=exc.__class__.__name__)
        return Decision(allowed=True, retry_after_seconds=0)
    try:
        _purge_expired(now=now)
    except DatabaseError as exc:  # Expired rows wait for the next purge; the count above stands.
        log_event(logger, logging.WARNING, "throttle.purge_failed", error=exc.__class__.__name__)
    if count <= rate.limit:
        return Decision(allowed=True, retry_after_seconds=0)
    return Decision(allowed=False, retry_after_seconds=max(1, math.ceil(window_end - now)))


def _increment(*, bucket: str, expires_at: datetime) -> int:
    table = connection.ops.quote_name(ThrottleCounter._meta.db_table)
    # A savepoint when the request already runs in a transaction: a failure
    # here must not poison the enrollment's own transaction.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (bucket, count, expires_at) VALUES (%s, 1, %s) "
            f"ON CONFLICT (bucket) DO UPDATE SET count = {table}.count + 1 RETURNING count",
            [bucket, connection.ops.adapt_datetimefield_value(expires_at)],
        )
        return cursor.fetchone()[0]


def _purge_expired(*, now: float) -> None:
    global _last_purge
    if now - _last_purge < _PURGE_EVERY:
        return
    _last_purge = now
    with transaction.atomic():
        ThrottleCounter.objects.filter(expires_at__lt=datetime.fromtimestamp(now, tz=UTC)).delete()
