"""Claiming due messages: the only code that moves a row into `sending`.

Raw SQL on purpose: the ORM cannot say `FOR UPDATE SKIP LOCKED` inside an
`UPDATE … RETURNING`, and the whole claim must be one short statement so a
crash at any point leaves either no claim or a complete one with a lease.
"""

from datetime import datetime, timedelta

from django.db import connection, transaction

from .models import OutboxMessage, OutboxStatus

TABLE = OutboxMessage._meta.db_table

# PostgreSQL: each CTE locks the rows it picks and skips rows another worker
# is claiming right now, so concurrent workers never pick the same row and
# never wait for each other. Expired leases (a worker that died) are taken by
# the same statement, so no separate reaper is needed. MATERIALIZED makes the
# row choice happen exactly once.
_POSTGRES_CLAIM = f"""
WITH expired AS MATERIALIZED (
    SELECT id FROM {TABLE}
    WHERE status = %(sending)s AND locked_until < %(now)s
    ORDER BY locked_until
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), due AS MATERIALIZED (
    SELECT id FROM {TABLE}
    WHERE status = %(pending)s AND available_at <= %(now)s
    ORDER BY available_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), chosen AS MATERIALIZED (
    SELECT id FROM (SELECT id FROM expired UNION ALL SELECT id FROM due) AS both_kinds
    LIMIT %(limit)s
)
UPDATE {TABLE} AS m
SET status = %(sending)s, locked_by = %(worker)s, locked_until = %(until)s,
    attempts = m.attempts + 1, updated_at = %(now)s
FROM chosen
WHERE m.id = chosen.id
RETURNING m.*
"""

# SQLite has one writer at a time and runs a single statement atomically, so
# the compare-and-set lives in the WHERE clause of one UPDATE: a row is only
# taken if it is still due at the moment of the write.
_SQLITE_CLAIM = f"""
UPDATE {TABLE}
SET status = %(sending)s, locked_by = %(worker)s, locked_until = %(until)s,
    attempts = attempts + 1, updated_at = %(now)s
WHERE id IN (
    SELECT id FROM {TABLE}
    WHERE (status = %(pending)s AND available_at <= %(now)s)
       OR (status = %(sending)s AND locked_until < %(now)s)
    ORDER BY available_at, id
    LIMIT %(limit)s
)
AND ((status = %(pending)s AND available_at <= %(now)s)
     OR (status = %(sending)s AND locked_until < %(now)s))
RETURNING *
"""


def outbox_claim_batch(*, worker_id: str, limit: int, lease_seconds: float, now: datetime) -> list[OutboxMessage]:
    """Lease up to `limit` due messages to `worker_id` and return them.

    The transaction commits before this returns: the slow part (talking to the
    email provider) must never run while row locks are held.
    """
    sql = _POSTGRES_CLAIM if connection.vendor == "postgresql" else _SQLITE_CLAIM
    adapt = connection.ops.adapt_datetimefield_value
    params = {
        "sending": OutboxStatus.SENDING,
        "pending": OutboxStatus.PENDING,
        "worker": worker_id,
        "now": adapt(now),
        "until": adapt(now + timedelta(seconds=lease_seconds)),
        "limit": limit,
    }
    with transaction.atomic():
        messages = list(OutboxMessage.objects.raw(sql, params))
    messages.sort(key=lambda message: (message.available_at, message.pk))
    return messages
