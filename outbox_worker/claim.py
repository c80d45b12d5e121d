"""Claiming due rows (emails and tasks): the only code that moves a row into `sending`/`running`.

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

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Model

from .models import (
    OutboxMessage,
    OutboxStatus,
    OutboxTask,
    TaskStatus,
    alive_worker_sql,
    database_now_plus_sql,
    database_now_sql,
    worker_stale_after,
)
from .suppression import hold_suppressed_claims


@dataclass(frozen=True)
class QueueTable:
    """A table the claim (and the guarded transitions) work on: emails, or tasks.

    Both tables share the columns the machinery needs (`status`, `available_at`,
    `locked_by`, `locked_until`, `started_at`, `attempts`, `interruptions`,
    `updated_at`); only the status names and the order of due rows differ.
    """

    model: type[Model]
    pending: str
    held: str
    # SQL ORDER BY of due rows, and a Python key giving the same order to the claimed rows.
    order_by: str
    sort_key: object

    @property
    def table(self) -> str:
        return self.model._meta.db_table


EMAILS = QueueTable(OutboxMessage, OutboxStatus.PENDING, OutboxStatus.SENDING, "available_at, id",
                    lambda row: (row.available_at, row.pk))  # fmt: skip
TASKS = QueueTable(OutboxTask, TaskStatus.PENDING, TaskStatus.RUNNING, "priority DESC, available_at, id",
                   lambda row: (-row.priority, row.available_at, row.pk))  # fmt: skip
TABLE = EMAILS.table


def _taken_back(vendor: str, row: str) -> str:
    """SQL condition: a held row of someone else that may be taken back."""
    now = database_now_sql(vendor)
    dead = f"NOT {alive_worker_sql(vendor, worker_column=f'{row}locked_by', stale_param='stale')}"
    # A worker never takes back its own rows: its other sender threads hold them.
    return f"{row}status = %(sending)s AND {row}locked_by <> %(worker)s AND ({row}locked_until < {now} OR {dead})"


def _set_claimed(vendor: str, row: str) -> str:
    # A row that comes back with `started_at` set was in flight when its worker
    # died: that is one interruption (the attempt was counted when it started),
    # and a solo one if it was marked started alone.
    in_flight = f"{row}status = %(sending)s AND {row}started_at IS NOT NULL"
    return f"""
    status = %(sending)s, locked_by = %(worker)s, locked_until = {database_now_plus_sql(vendor, "lease")},
    interruptions = {row}interruptions + CASE WHEN {in_flight} THEN 1 ELSE 0 END,
    solo_interruptions = {row}solo_interruptions + CASE WHEN {in_flight} AND {row}started_solo THEN 1 ELSE 0 END,
    started_at = NULL, started_solo = %(false)s, updated_at = {database_now_sql(vendor)}"""


def _postgres_claim(queue: QueueTable, where: str) -> str:
    # Each CTE locks the rows it picks and skips rows another worker is
    # claiming right now, so concurrent workers never pick the same row and
    # never wait for each other. Rows taken back from dead workers come through
    # the same statement, so no separate reaper is needed. MATERIALIZED makes
    # the row choice happen exactly once.
    return f"""
WITH taken_back AS MATERIALIZED (
    SELECT id FROM {queue.table} AS m
    WHERE {_taken_back("postgresql", "m.")}{where}
    ORDER BY locked_until
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), due AS MATERIALIZED (
    SELECT id FROM {queue.table}
    WHERE status = %(pending)s AND available_at <= {database_now_sql("postgresql")}{where}
    ORDER BY {queue.order_by}
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), chosen AS MATERIALIZED (
    SELECT id FROM (SELECT id FROM taken_back UNION ALL SELECT id FROM due) AS both_kinds
    LIMIT %(limit)s
)
UPDATE {queue.table} AS m
SET {_set_claimed("postgresql", "m.")}
FROM chosen
WHERE m.id = chosen.id
RETURNING m.*
"""


def _sqlite_claim(queue: QueueTable, where: str) -> str:
    # SQLite has one writer at a time and runs a single statement atomically,
    # so the compare-and-set lives in the WHERE clause of one UPDATE: a row is
    # only taken if it is still claimable at the moment of the write.
    claimable = (
        f"(((status = %(pending)s AND available_at <= {database_now_sql('sqlite')}) "
        f"OR ({_taken_back('sqlite', '')})){where})"
    )
    return f"""
UPDATE {queue.table}
SET {_set_claimed("sqlite", "")}
WHERE id IN (
    SELECT id FROM {queue.table} WHERE {claimable} ORDER BY {queue.order_by} LIMIT %(limit)s
)
AND {claimable}
RETURNING *
"""


def _queue_filter(queues: Sequence[str] | None, row: str = "") -> tuple[str, dict]:
    """SQL `AND queue_name IN (…)` for a worker serving only some task queues (none: every queue)."""
    if queues is None:
        return "", {}
    params = {f"queue{n}": name for n, name in enumerate(queues)}
    placeholders = ", ".join(f"%({key})s" for key in params) or "NULL"
    return f" AND queue_name IN ({placeholders})", params


# The email claim is built once: it runs on every turn of every sender.
_EMAIL_CLAIM = {"postgresql": _postgres_claim(EMAILS, ""), "sqlite": _sqlite_claim(EMAILS, "")}
_POSTGRES_CLAIM = _EMAIL_CLAIM["postgresql"]  # what bench/ times (benchmark 7)


def claim_batch(
    queue: QueueTable, *, worker_id: str, limit: int, lease_seconds: float, sql: str, extra: dict | None = None
) -> list:
    """Lease up to `limit` claimable rows of `queue` to `worker_id` and return them, in `queue`'s order.

    The transaction commits before this returns: the slow part (the send, the
    task) must never run while row locks are held.
    """
    params = {
        "sending": queue.held,
        "pending": queue.pending,
        "worker": worker_id,
        "lease": float(lease_seconds),
        "stale": -worker_stale_after().total_seconds(),
        "limit": limit,
        "false": False,
        **(extra or {}),
    }
    with transaction.atomic():
        rows = list(queue.model.objects.raw(sql, params))
        if queue is EMAILS:
            # A suppressed recipient: held here, in the claim's transaction (one lookup per batch).
            rows = hold_suppressed_claims(rows)
    rows.sort(key=queue.sort_key)
    return rows


def outbox_claim_batch(*, worker_id: str, limit: int, lease_seconds: float) -> list[OutboxMessage]:
    """Lease up to `limit` claimable messages to `worker_id` and return them, oldest due first."""
    sql = _EMAIL_CLAIM["postgresql" if connection.vendor == "postgresql" else "sqlite"]
    return claim_batch(EMAILS, worker_id=worker_id, limit=limit, lease_seconds=lease_seconds, sql=sql)


def task_claim_batch(
    *, worker_id: str, limit: int, lease_seconds: float, queues: Sequence[str] | None = None
) -> list[OutboxTask]:
    """Lease up to `limit` claimable tasks (of `queues`, or any) to `worker_id`: highest priority, then oldest due."""
    where, extra = _queue_filter(queues)
    build = _postgres_claim if connection.vendor == "postgresql" else _sqlite_claim
    sql = build(TASKS, where)
    return claim_batch(TASKS, worker_id=worker_id, limit=limit, lease_seconds=lease_seconds, sql=sql, extra=extra)
