"""Every status change a worker makes after a claim, each a guarded update.

A worker may only change a row it still holds (`status = sending AND
locked_by = me`). If another worker took the row back meanwhile, the update
matches nothing and the caller is told which rows, instead of overwriting the
other worker's result. Times come from the database clock, like the claim's.
"""

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Now

from .claim import EMAILS, QueueTable
from .models import DeliveryAttempt, OutboxMessage, OutboxStatus, WorkerHeartbeat, database_now_sql

TABLE = OutboxMessage._meta.db_table


@dataclass(slots=True)
class Attempt:
    """One try, to be written as a DeliveryAttempt row.

    A plain record rather than a model instance: building one model per try,
    and bulk_create() preparing each field of it, cost more CPU than the rest
    of a try's bookkeeping together (the worker is CPU-bound on a fast provider).
    """

    message_id: int
    attempt: int
    try_number: int
    worker: str
    started_at: datetime
    finished_at: datetime
    outcome: str
    smtp_code: int | None = None
    error: str = ""


_ATTEMPT_COLUMNS = ("message_id", "attempt", "try_number", "worker", "started_at", "finished_at", "outcome",
                    "smtp_code", "error")  # fmt: skip
# Rows per INSERT: 9 parameters each stays far below SQLite's oldest limit of 999.
_ATTEMPTS_PER_INSERT = 100


@dataclass
class Outcome:
    """How one delivery ended, waiting to be written.

    `status` is SENT, FAILED, or PENDING: tried again `retry_in` after it was
    decided (`decided_at`, this process's monotonic clock; the time it waited
    in memory before being written is not added on top) or at once. `refund`
    gives back the attempt counted when the send started: the delivery said
    nothing about the message (the provider refused us) or never really began.
    """

    message_id: int
    status: str
    error: str = ""
    retry_in: timedelta | None = None
    attempts: list[Attempt] = field(default_factory=list)
    refund: bool = False
    provider_message_id: str = ""  # when SENT through an HTTP API: the provider's id (see tracking)
    decided_at: float = field(default_factory=time.monotonic, compare=False, repr=False)

    def retry_in_left(self) -> timedelta | None:
        """What is left of `retry_in` now (never below zero); None when the message is due at once."""
        if not self.retry_in:
            return None
        return max(timedelta(0), self.retry_in - timedelta(seconds=time.monotonic() - self.decided_at))

    def retry_due(self) -> float | None:
        """When the retry comes due, on the monotonic clock; None when the message is due at once."""
        return self.decided_at + self.retry_in.total_seconds() if self.retry_in else None


def _held(message_ids: Iterable[int], worker_id: str, queue: QueueTable = EMAILS) -> QuerySet:
    """The rows of `queue` among `message_ids` that `worker_id` still holds."""
    return queue.model.objects.filter(pk__in=list(message_ids), status=queue.held, locked_by=worker_id)


def _update_held_returning(
    message_ids: Sequence[int], worker_id: str, assignments: str, params: list, returning: str
) -> list[tuple]:
    """`UPDATE … SET assignments WHERE held RETURNING …`: the ORM's update() cannot say which rows it changed."""
    if not message_ids:
        return []
    placeholders = ", ".join(["%s"] * len(message_ids))
    sql = (
        f"UPDATE {TABLE} SET {assignments} "
        f"WHERE id IN ({placeholders}) AND status = %s AND locked_by = %s RETURNING {returning}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *message_ids, OutboxStatus.SENDING, worker_id])
        return cursor.fetchall()


def _write_outcomes(outcomes: list[Outcome], worker_id: str) -> list[int]:
    now = database_now_sql(connection.vendor)
    sent_ids = [o.message_id for o in outcomes if o.status == OutboxStatus.SENT]
    provider_ids, provider_params = _provider_ids_sql(outcomes)
    # All sent messages in one statement, however many emails went out.
    finished = _update_held_returning(
        sent_ids,
        worker_id,
        f"status = %s, sent_at = {now}, last_error = '', locked_by = '', locked_until = NULL, "
        f"started_at = NULL, updated_at = {now}{provider_ids}",
        [OutboxStatus.SENT, *provider_params],
        "id",
    )
    finished_ids = {row[0] for row in finished}
    lost = [pk for pk in sent_ids if pk not in finished_ids]
    for outcome in outcomes:
        if outcome.status == OutboxStatus.SENT:
            continue
        updated = _held([outcome.message_id], worker_id).update(
            status=outcome.status,
            last_error=outcome.error,
            available_at=Now() + left if (left := outcome.retry_in_left()) else Now(),
            attempts=F("attempts") - 1 if outcome.refund else F("attempts"),
            locked_by="",
            locked_until=None,
            started_at=None,
            updated_at=Now(),
        )
        if not updated:
            lost.append(outcome.message_id)
    already = _attempts_already_recorded(lost, worker_id) if lost else set()
    # The tries happened whatever became of the lease: record them either way.
    _insert_attempts([attempt for o in outcomes for attempt in o.attempts if _attempt_key(attempt) not in already])
    # A row whose tries are already recorded was finished by an earlier call of
    # ours whose commit went through unacknowledged: not lost.
    by_id = {o.message_id: o for o in outcomes}
    return [
        pk for pk in lost if not (by_id[pk].attempts and all(_attempt_key(a) in already for a in by_id[pk].attempts))
    ]


def _provider_ids_sql(outcomes: list[Outcome]) -> tuple[str, list]:
    """`, provider_message_id = CASE id WHEN … END` for the sent rows that have one (none over SMTP)."""
    pairs = [
        (o.message_id, o.provider_message_id)
        for o in outcomes
        if o.status == OutboxStatus.SENT and o.provider_message_id
    ]
    if not pairs:
        return "", []
    whens = " ".join(["WHEN %s THEN %s"] * len(pairs))
    return f", provider_message_id = CASE id {whens} ELSE provider_message_id END", [v for pair in pairs for v in pair]


def _insert_attempts(attempts: list[Attempt]) -> None:
    """Write `attempts` as DeliveryAttempt rows with one multi-row INSERT (per 100 rows)."""
    adapt = connection.ops.adapt_datetimefield_value  # what the ORM does to a datetime (SQLite: UTC text)
    columns = ", ".join(_ATTEMPT_COLUMNS)
    with connection.cursor() as cursor:
        for start in range(0, len(attempts), _ATTEMPTS_PER_INSERT):
            chunk = attempts[start : start + _ATTEMPTS_PER_INSERT]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            params = [value for a in chunk for value in _attempt_values(a, adapt)]
            cursor.execute(f"INSERT INTO {DeliveryAttempt._meta.db_table} ({columns}) VALUES {values}", params)


def _attempt_values(attempt: Attempt, adapt: Callable[[datetime], object] = lambda value: value) -> tuple:
    """A try's values in `_ATTEMPT_COLUMNS` order, its datetimes through `adapt`."""
    a = attempt
    return (a.message_id, a.attempt, a.try_number, a.worker, adapt(a.started_at), adapt(a.finished_at),
            str(a.outcome), a.smtp_code, a.error)  # fmt: skip


def _attempt_key(attempt: Attempt) -> tuple:
    return (attempt.message_id, attempt.attempt, attempt.try_number, attempt.started_at)


def _attempts_already_recorded(message_ids: list[int], worker_id: str) -> set[tuple]:
    rows = DeliveryAttempt.objects.filter(message_id__in=message_ids, worker=worker_id).values_list(
        "message_id", "attempt", "try_number", "started_at"
    )
    return set(rows)


def _one_statement(outcomes: list[Outcome]) -> bool:
    """Whether the outcomes (and a mark) can be written as one PostgreSQL statement: all sent, the usual case.

    One statement is its own transaction in autocommit: one round trip where
    the transaction took four (UPDATE, INSERT, UPDATE, COMMIT), each under the
    book's write lock that the other sender threads wait on.
    """
    return (
        connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and all(o.status == OutboxStatus.SENT for o in outcomes)
    )


def _write_in_one_statement(
    outcomes: list[Outcome], mark_ids: Sequence[int], worker_id: str, *, solo: bool = False
) -> tuple[dict[int, int], list[int]]:
    """`_write_outcomes` (every outcome sent) and the mark, as one statement; return (marked attempts, lost ids).

    Idempotent like `_write_outcomes`: a try already recorded (by an earlier
    call whose commit acknowledgement was lost) is not inserted again, and a
    row not held whose every try was already recorded was finished by that
    call, so it is not lost.
    """
    now = database_now_sql("postgresql")
    provider_ids, provider_params = _provider_ids_sql(outcomes)
    attempts = [attempt for o in outcomes for attempt in o.attempts]
    held = "status = %s AND locked_by = %s"
    parts = [
        f"""sent AS (UPDATE {TABLE} SET status = %s, sent_at = {now}, last_error = '', locked_by = '',
            locked_until = NULL, started_at = NULL, updated_at = {now}{provider_ids}
            WHERE id = ANY(%s::bigint[]) AND {held} RETURNING id)""",
        f"""marked AS (UPDATE {TABLE} SET started_at = {now}, started_solo = %s, attempts = attempts + 1,
            updated_at = {now} WHERE id = ANY(%s::bigint[]) AND {held} RETURNING id, attempts)""",
    ]
    params: list = [OutboxStatus.SENT, *provider_params, [o.message_id for o in outcomes], OutboxStatus.SENDING,
                    worker_id, solo, list(mark_ids), OutboxStatus.SENDING, worker_id]  # fmt: skip
    inserted = "SELECT NULL::bigint, NULL::integer WHERE false"
    if attempts:
        values = ", ".join(["(%s::bigint, %s::integer, %s::integer, %s, %s::timestamptz, %s::timestamptz, %s, "
                            "%s::integer, %s)"] * len(attempts))  # fmt: skip
        parts.append(f"""recorded AS (INSERT INTO {DeliveryAttempt._meta.db_table} ({", ".join(_ATTEMPT_COLUMNS)})
            SELECT * FROM (VALUES {values}) AS v ({", ".join(_ATTEMPT_COLUMNS)})
            WHERE NOT EXISTS (SELECT 1 FROM {DeliveryAttempt._meta.db_table} AS d WHERE d.message_id = v.message_id
                AND d.worker = v.worker AND d.attempt = v.attempt AND d.try_number = v.try_number
                AND d.started_at = v.started_at)
            RETURNING message_id)""")
        params += [value for a in attempts for value in _attempt_values(a)]
        inserted = "SELECT DISTINCT message_id, NULL::integer FROM recorded"
    sql = (
        f"WITH {', '.join(parts)} SELECT 's', id, NULL::integer FROM sent "
        f"UNION ALL SELECT 'm', id, attempts FROM marked UNION ALL SELECT 'r', * FROM ({inserted}) AS r"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    finished = {pk for kind, pk, _ in rows if kind == "s"}
    recorded = {pk for kind, pk, _ in rows if kind == "r"}
    # A row not held is lost unless every try of it was already recorded: then an earlier call of ours finished it.
    lost = [
        o.message_id for o in outcomes if o.message_id not in finished and (o.message_id in recorded or not o.attempts)
    ]
    return {pk: n for kind, pk, n in rows if kind == "m"}, lost


def outbox_finish(*, outcomes: list[Outcome], worker_id: str) -> list[int]:
    """Write delivery outcomes in one transaction; return the ids of rows this worker no longer held.

    Idempotent: calling it again with the same outcomes (after a commit whose
    acknowledgement was lost) neither records the tries twice nor reports
    those rows as lost.
    """
    if _one_statement(outcomes):
        return _write_in_one_statement(outcomes, [], worker_id)[1]
    with transaction.atomic():
        return _write_outcomes(outcomes, worker_id)


def outbox_mark_started(
    *, message_ids: Sequence[int], worker_id: str, outcomes: list[Outcome] = ()
) -> tuple[dict[int, int], list[int]]:
    """Count an attempt for each message about to be sent, writing pending `outcomes` in the same transaction.

    Return each still-held message's attempt number, and the ids of outcomes'
    rows that were lost. A message missing from the first is no longer ours
    and must not be sent. Committed before the send begins, so a message that
    kills the worker has always been charged for it.
    """
    solo = len(message_ids) == 1  # the evidence a death counts against it (claim.py)
    if _one_statement(list(outcomes)):
        return _write_in_one_statement(list(outcomes), message_ids, worker_id, solo=solo)
    now = database_now_sql(connection.vendor)
    with transaction.atomic():
        lost = _write_outcomes(list(outcomes), worker_id) if outcomes else []
        marked = _update_held_returning(
            list(message_ids),
            worker_id,
            f"started_at = {now}, started_solo = %s, attempts = attempts + 1, updated_at = {now}",
            [solo],
            "id, attempts",
        )
    return dict(marked), lost


def outbox_release(
    *,
    message_ids: Iterable[int],
    worker_id: str,
    retry_in: timedelta | None = None,
    queue: QueueTable = EMAILS,
    error: str = "",
) -> int:
    """Hand back claimed rows that were not sent (or run): due again now (or `retry_in` from now), nothing charged.

    A row already marked started gets its attempt back: it never reached the
    provider. `error` (emails only), if given, becomes their `last_error`: why
    they are waiting, such as the connection that could not be made.
    """
    ids = list(message_ids)
    if not ids:
        return 0
    with transaction.atomic():
        _held(ids, worker_id, queue).filter(started_at__isnull=False).update(
            attempts=F("attempts") - 1, started_at=None
        )
        return _held(ids, worker_id, queue).update(
            status=queue.pending,
            locked_by="",
            locked_until=None,
            available_at=Now() + retry_in if retry_in else F("available_at"),
            updated_at=Now(),
            **({"last_error": error} if error else {}),
        )


def outbox_extend_leases(
    *, message_ids: Iterable[int], worker_id: str, lease_seconds: float, queue: QueueTable = EMAILS
) -> int:
    """Push the lease of the given rows of `queue` that `worker_id` still holds; return how many that is."""
    return _held(message_ids, worker_id, queue).update(locked_until=Now() + timedelta(seconds=lease_seconds))


def outbox_worker_seen(
    *, worker_id: str, hostname: str, pid: int, paused_since: datetime | None = None, pause_reason: str = ""
) -> None:
    """Record, by the database clock, that the worker `worker_id` is alive, and whether its delivery is paused."""
    state = {"paused_since": paused_since, "pause_reason": pause_reason}
    if not WorkerHeartbeat.objects.filter(worker_id=worker_id).update(last_seen_at=Now(), **state):
        WorkerHeartbeat.objects.create(
            worker_id=worker_id, hostname=hostname, pid=pid, started_at=Now(), last_seen_at=Now(), **state
        )


def outbox_worker_gone(*, worker_id: str) -> None:
    """Record a clean shutdown: the worker stops counting as alive at once, and operators see it as stopped."""
    WorkerHeartbeat.objects.filter(worker_id=worker_id).update(
        stopped_at=Now(), last_seen_at=Now(), paused_since=None, pause_reason=""
    )
