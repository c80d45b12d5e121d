"""Running tasks inside the outbox worker: claim, mark started, run, write the outcome.

The same discipline as emails (worker.py): a short committed claim (nothing
charged), then per task a committed "started" mark (`attempts + 1`, written in
one transaction with the previous task's outcome) before the task runs
outside any transaction. A worker killed mid-task leaves the row `running`
under a heartbeat that goes stale; the next claim takes it back and counts an
interruption; a task that kills its worker twice is failed alone. Between
healthy workers a task runs once; across a crash, at least once.
"""

import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models.functions import Now
from django_tasks import TaskContext
from django_tasks.exceptions import InvalidTaskError
from django_tasks.utils import get_module_path

from .claim import TASKS, task_claim_batch
from .logevents import log_event
from .models import OutboxTask, TaskStatus
from .outcomes import quarantine_reason, with_database_retry
from .retry import RetryPolicy
from .siblings import SharedClaims
from .tasks import PermanentTaskError, RetryTaskLater, TaskInterrupted, json_value, load_task, task_result_from_row
from .transitions import _held, outbox_release

logger = logging.getLogger("outbox_worker.worker")


@dataclass
class TaskOutcome:
    """How one run ended: SUCCEEDED, FAILED, or PENDING again `retry_in` from now."""

    task_id: int
    status: str
    return_value: object = None
    errors: list[dict] = field(default_factory=list)  # every error so far, this run's last
    retry_in: timedelta | None = None


def _write_outcome(outcome: TaskOutcome, worker_id: str) -> bool:
    last_error = outcome.errors[-1]["traceback"] if outcome.errors and outcome.status != TaskStatus.SUCCEEDED else ""
    finished = outcome.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)
    return bool(
        _held([outcome.task_id], worker_id, TASKS).update(
            status=outcome.status,
            return_value=outcome.return_value,
            errors=outcome.errors,
            last_error=last_error,
            available_at=Now() + outcome.retry_in if outcome.retry_in else Now(),
            finished_at=Now() if finished else None,
            locked_by="",
            locked_until=None,
            started_at=None,
            updated_at=Now(),
        )
    )


def task_mark_started(*, task: OutboxTask, worker_id: str, previous: TaskOutcome | None = None) -> tuple[bool, bool]:
    """Count an attempt for `task` about to run, writing `previous` (the last run's outcome) in the same transaction.

    Return (whether `task` is still ours to run, whether `previous` was still
    ours when written). Committed before the task starts, so a task that
    kills the worker has always been charged for it.
    """
    with transaction.atomic():
        previous_kept = _write_outcome(previous, worker_id) if previous else True
        marked = _held([task.pk], worker_id, TASKS).update(
            started_at=Now(), started_solo=True, last_attempted_at=Now(), updated_at=Now(),
            attempts=task.attempts + 1, worker_ids=[*task.worker_ids, worker_id],
        )  # fmt: skip
    return bool(marked), previous_kept


def task_finish(*, outcome: TaskOutcome, worker_id: str) -> bool:
    """Write one run's outcome; return whether the row was still ours. Idempotent: a second write changes nothing."""
    with transaction.atomic():
        return _write_outcome(outcome, worker_id)


def _error(exc: BaseException) -> dict:
    return {"exception_class_path": get_module_path(type(exc)), "traceback": "".join(traceback.format_exception(exc))}


def run_task(row: OutboxTask, *, policy: RetryPolicy) -> TaskOutcome:
    """Run one claimed, started task and judge how it ended."""
    errors = list(row.errors)
    try:
        task = load_task(row.task_path)
    except (ImportError, AttributeError) as exc:
        # The code changed under the row (a renamed or removed task): running it again will not help.
        return TaskOutcome(row.pk, TaskStatus.FAILED, errors=[*errors, _error(exc)])
    args = row.args
    try:
        if task.takes_context:
            args = [TaskContext(task_result=task_result_from_row(row, task)), *args]
        raw_value = task.call(*args, **row.kwargs)
    except PermanentTaskError as exc:
        return TaskOutcome(row.pk, TaskStatus.FAILED, errors=[*errors, _error(exc)])
    except RetryTaskLater as exc:
        return _retry_or_fail(row, [*errors, _error(exc)], policy, at_least=exc.after)
    except Exception as exc:  # noqa: BLE001 - any other error is the task's, retried
        return _retry_or_fail(row, [*errors, _error(exc)], policy)
    try:
        return_value = json_value(raw_value, what="the task's return value")
    except InvalidTaskError as exc:
        # It ran; running it again would only repeat its side effects.
        return TaskOutcome(row.pk, TaskStatus.FAILED, errors=[*errors, _error(exc)])
    return TaskOutcome(row.pk, TaskStatus.SUCCEEDED, return_value=return_value, errors=errors)


def _retry_or_fail(row: OutboxTask, errors: list[dict], policy: RetryPolicy, *, at_least: float = 0.0) -> TaskOutcome:
    if row.attempts < row.max_attempts:
        # The task's own "not before" (a Retry-After) wins over a shorter backoff, up to the backoff's cap.
        wait = max(policy.backoff(row.attempts), timedelta(seconds=min(at_least, policy.backoff_max)))
        return TaskOutcome(row.pk, TaskStatus.PENDING, errors=errors, retry_in=wait)
    return TaskOutcome(row.pk, TaskStatus.FAILED, errors=errors)


def _quarantined(row: OutboxTask) -> TaskOutcome | None:
    """Fail, without running, a task its workers died running (the rule: outcomes.quarantine_reason)."""
    reason = quarantine_reason(row, doing="running it", done="run")
    if reason is None:
        return None
    error = {"exception_class_path": get_module_path(TaskInterrupted), "traceback": reason}
    return TaskOutcome(row.pk, TaskStatus.FAILED, errors=[*row.errors, error])


class TaskRunner:
    """One worker process's task side: shared by its sender threads, its in-hand rows leased by the keeper."""

    def __init__(
        self, *, worker_id: str, queues: Sequence[str] | None, batch_size: int, lease_seconds: float,
        policy: RetryPolicy, stopping: Callable[[], bool], recheck_every: float = 2.0,
    ) -> None:  # fmt: skip
        self.worker_id = worker_id
        self.queues = list(queues) if queues is not None else None
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.policy = policy
        self.stopping = stopping
        self._lock = threading.Lock()
        self._in_hand: set[int] = set()
        self.stats: Counter[str] = Counter()  # task_succeeded, task_retry, task_failed
        # After a claim that found nothing, emails in full flow do not pay for a
        # task claim on every turn: the next one waits for a wake-up (NOTIFY, by
        # Waker generation) or `recheck_every` seconds, the same as an idle worker.
        self.recheck_every = recheck_every
        self._found_nothing: tuple[float, int | None] | None = None  # (monotonic time, generation)
        # Senders woken together by one NOTIFY make one task claim between them, not one each.
        self.claims = SharedClaims()

    def in_hand(self) -> list[int]:
        with self._lock:
            return list(self._in_hand)

    def _hold(self, ids: Sequence[int], keep: bool) -> None:
        with self._lock:
            (self._in_hand.update if keep else self._in_hand.difference_update)(ids)

    def held_elsewhere(self) -> bool:
        """Whether tasks this worker could run are held by other workers (for --once)."""
        rows = OutboxTask.objects.filter(status=TaskStatus.RUNNING).exclude(locked_by=self.worker_id)
        return (rows.filter(queue_name__in=self.queues) if self.queues is not None else rows).exists()

    def _may_skip(self, generation: int | None, recheck_every: float) -> bool:
        with self._lock:
            found_nothing = self._found_nothing
        if found_nothing is None:
            return False
        at, seen_generation = found_nothing
        return seen_generation == generation and time.monotonic() - at < recheck_every

    def process_batch(
        self,
        *,
        force: bool = True,
        generation: int | None = None,
        ticket: int | None = None,
        recheck_every: float | None = None,
    ) -> int:
        """Claim and run one batch of tasks; return how many were claimed.

        Without `force`, a claim is skipped (0) while the last one found nothing
        and no wake-up (`generation`) or `recheck_every` seconds (default: the
        runner's) came since.
        With a `ticket` (`claims.ticket()`), it is skipped too if a claim begun
        after the ticket found nothing (siblings.SharedClaims).
        Stops between tasks on shutdown: the task in hand runs to its end, the
        rest go back at once, uncharged.
        """
        if not force and self._may_skip(generation, self.recheck_every if recheck_every is None else recheck_every):
            return 0
        rows = self.claims.claim(
            ticket,
            lambda: task_claim_batch(
                worker_id=self.worker_id, limit=self.batch_size, lease_seconds=self.lease_seconds, queues=self.queues
            ),
        )
        if rows is None:  # a sibling's claim, begun after the ticket, found nothing
            return 0
        with self._lock:
            self._found_nothing = None if rows else (time.monotonic(), generation)
        if not rows:
            return 0
        self._hold([row.pk for row in rows], True)
        waiting = list(rows)
        previous: TaskOutcome | None = None
        try:
            while waiting and not self.stopping():
                row = waiting.pop(0)
                if (outcome := _quarantined(row)) is not None:
                    previous = self._written(previous)
                    self._log(row, outcome, 0.0)
                    previous = outcome
                    continue
                ours, kept = with_database_retry(
                    lambda row=row, previous=previous: task_mark_started(
                        task=row, worker_id=self.worker_id, previous=previous
                    ),
                    worker_id=self.worker_id,
                )
                self._lost(previous, kept)
                previous = None
                if not ours:  # taken back by another worker meanwhile: not ours to run
                    continue
                row.attempts += 1
                row.worker_ids = [*row.worker_ids, self.worker_id]
                started = time.monotonic()
                outcome = run_task(row, policy=self.policy)
                self._log(row, outcome, time.monotonic() - started)
                previous = outcome
        finally:
            try:
                self._written(previous)
                if waiting:
                    released = with_database_retry(
                        lambda: outbox_release(
                            message_ids=[row.pk for row in waiting], worker_id=self.worker_id, queue=TASKS
                        ),
                        worker_id=self.worker_id,
                    )
                    log_event(logger, logging.INFO, "outbox.tasks_released", worker=self.worker_id, count=released)
            finally:
                self._hold([row.pk for row in rows], False)
        return len(rows)

    def _written(self, outcome: TaskOutcome | None) -> None:
        if outcome is not None:
            kept = with_database_retry(
                lambda: task_finish(outcome=outcome, worker_id=self.worker_id), worker_id=self.worker_id
            )
            self._lost(outcome, kept)

    def _lost(self, outcome: TaskOutcome | None, kept: bool) -> None:
        if outcome is not None and not kept:
            log_event(logger, logging.WARNING, "outbox.lease_lost", worker=self.worker_id, rows=1,
                      ids=[outcome.task_id], consequence="another worker took it back; it may run twice")  # fmt: skip

    def _log(self, row: OutboxTask, outcome: TaskOutcome, seconds: float) -> None:
        name = {TaskStatus.SUCCEEDED: "succeeded", TaskStatus.FAILED: "failed", TaskStatus.PENDING: "retry"}
        with self._lock:
            self.stats[f"task_{name[outcome.status]}"] += 1
        level = logging.INFO if outcome.status == TaskStatus.SUCCEEDED else logging.WARNING
        log_event(
            logger, level, "outbox.task", id=row.pk, task=row.task_path, queue=row.queue_name,
            attempt=row.attempts, outcome=name[outcome.status], duration_ms=round(seconds * 1000, 1),
            **({"error": outcome.errors[-1]["exception_class_path"]} if outcome.status != TaskStatus.SUCCEEDED else {}),
        )  # fmt: skip
