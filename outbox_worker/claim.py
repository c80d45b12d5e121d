"""Claiming due messages: the only code that moves a row into `sending`.

Raw SQL on purpose: the ORM cannot say `FOR UPDATE SKIP LOCKED` inside an
`UPDATE … RETURNING`, and the whole claim must be one short statement so a
crash at any point leaves either no claim or a complete one with a lease.

Time is the database's: no `now` comes from Python, so workers whose clocks
disagree still agree on which leases are live. A row held by another worker
comes back when its lease has run out or when its holder's heartbeat went
stale (`models.alive_worker_sql`), whichever is first: a killed worker's rows
return within seconds, not a whole lease. A claim charges nothing; the
attempt is counted when the send starts (`transitions.outbox_mark_started`).
"""

from django.db import connection, transaction

from .models import (
    OutboxMessage,
    OutboxStatus,
    alive_worker_sql,
    database_now_plus_sql,
    database_now_sql,
    worker_stale_after,
)
from .suppression import hold_suppressed_claims

TABLE = OutboxMessage._meta.db_table


def _taken_back(vendor: str, row: str) -> str:
    """SQL condition: a `sending` row held by someone else that may be taken back."""
    now = database_now_sql(vendor)
    dead = f"NOT {alive_worker_sql(vendor, worker_column=f'{row}locked_by', stale_param='stale')}"
    # A worker never takes back its own rows: its other sender threads hold them.
    return f"{row}status = %(sending)s AND {row}locked_by <> %(worker)s AND ({row}locked_until < {now} OR {dead})"


def _set_claimed(vendor: str, row: str) -> str:
    # A row that comes back with `started_at` set was in flight when its worker
    # died: that is one interruption (the attempt was counted when it started).
    return f"""
    status = %(sending)s, locked_by = %(worker)s, locked_until = {database_now_plus_sql(vendor, "lease")},
    interruptions = {row}interruptions
        + CASE WHEN {row}status = %(sending)s AND {row}started_at IS NOT NULL THEN 1 ELSE 0 END,
    started_at = NULL, updated_at = {database_now_sql(vendor)}"""


# PostgreSQL: each CTE locks the rows it picks and skips rows another worker
# is claiming right now, so concurrent workers never pick the same row and
# never wait for each other. Rows taken back from dead workers come through
# the same statement, so no separate reaper is needed. MATERIALIZED makes the
# row choice happen exactly once.
_POSTGRES_CLAIM = f"""
WITH taken_back AS MATERIALIZED (
    SELECT id FROM {TABLE} AS m
    WHERE {_taken_back("postgresql", "m.")}
    ORDER BY locked_until
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), due AS MATERIALIZED (
    SELECT id FROM {TABLE}
    WHERE status = %(pending)s AND available_at <= {database_now_sql("postgresql")}
    ORDER BY available_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), chosen AS MATERIALIZED (
    SELECT id FROM (SELECT id FROM taken_back UNION ALL SELECT id FROM due) AS both_kinds
    LIMIT %(limit)s
)
UPDATE {TABLE} AS m
SET {_set_claimed("postgresql", "m.")}
FROM chosen
WHERE m.id = chosen.id
RETURNING m.*
"""

# SQLite has one writer at a time and runs a single statement atomically, so
# the compare-and-set lives in the WHERE clause of one UPDATE: a row is only
# taken if it is still claimable at the moment of the write.
_SQLITE_CLAIMABLE = (
    f"((status = %(pending)s AND available_at <= {database_now_sql('sqlite')}) OR ({_taken_back('sqlite', '')}))"
)
_SQLITE_CLAIM = f"""
UPDATE {TABLE}
SET {_set_claimed("sqlite", "")}
WHERE id IN (
    SELECT id FROM {TABLE} WHERE {_SQLITE_CLAIMABLE} ORDER BY available_at, id LIMIT %(limit)s
)
AND {_SQLITE_CLAIMABLE}
RETURNING *
"""


def outbox_claim_batch(*, worker_id: str, limit: int, lease_seconds: float) -> list[OutboxMessage]:
    """Lease up to `limit` claimable messages to `worker_id` and return them, oldest due first.

    The transaction commits before this returns: the slow part (talking to the
    email provider) must never run while row locks are held.
    """
    sql = _POSTGRES_CLAIM if connection.vendor == "postgresql" else _SQLITE_CLAIM
    params = {
        "sending": OutboxStatus.SENDING,
        "pending": OutboxStatus.PENDING,
        "worker": worker_id,
        "lease": float(lease_seconds),
        "stale": -worker_stale_after().total_seconds(),
        "limit": limit,
    }
    with transaction.atomic():
        messages = list(OutboxMessage.objects.raw(sql, params))
        # Suppressed since enqueue: held here, in the claim's transaction (one lookup per batch).
        messages = hold_suppressed_claims(messages)
    messages.sort(key=lambda message: (message.available_at, message.pk))
    return messages
