"""Listening for the outbox's NOTIFY in tests, and who holds the idle lock.

What was heard is proven by a marker rather than a timeout.
"""

import select
import time

from django.db import connection

from outbox_worker.background import CHANNEL
from outbox_worker.idle import IDLE_LOCK_KEY

MARKER = "test-marker"


def heard_before_marker(listener) -> list[str]:
    """Commit a marker notification; return the payloads of every notification that came before it.

    Notifications are delivered in commit order, so once the marker arrives
    nothing committed before it can still be on its way: silence is proven,
    not waited for.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, MARKER])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        select.select([listener], [], [], max(0.0, deadline - time.monotonic()))
        listener.poll()
        payloads = [n.payload for n in listener.notifies]
        if MARKER in payloads:
            listener.notifies.clear()
            return payloads[: payloads.index(MARKER)]
    raise AssertionError("the marker notification never arrived")


def idle_lock_holders() -> list[int]:
    """Backends holding the idle lock exclusively in the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT pid FROM pg_locks
            WHERE locktype = 'advisory' AND objsubid = 1 AND classid = %s AND objid = %s
              AND mode = 'ExclusiveLock' AND granted
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """,
            [IDLE_LOCK_KEY >> 32, IDLE_LOCK_KEY & 0xFFFFFFFF],
        )
        return [row[0] for row in cursor.fetchall()]
