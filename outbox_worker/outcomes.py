"""Delivery outcomes: how each ending is judged, and the book of what a worker has yet to write.

Shared by the sender threads and the keeper thread. Outcomes are written in
groups (one round trip per OUTBOX_FINISH_EVERY messages, together with the
next group's "started" mark), and by the keeper once the oldest has waited
OUTBOX_FINISH_WITHIN seconds, even while a sender is stuck in its next send.
"""

import heapq
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, close_old_connections, connection
from django.utils import timezone

from .logevents import log_event
from .models import AttemptOutcome, OutboxMessage, OutboxStatus, OutboxTask
from .retry import RetryPolicy
from .transitions import Attempt, Outcome, outbox_finish, outbox_mark_started

logger = logging.getLogger("outbox_worker.worker")

T = TypeVar("T")

# Waits after a database error, growing up to the last one: the database
# restarting must cost a pause, never a crash loop or a message marked failed.
DATABASE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

# Retries an idle worker wakes for by itself; past that many, it finds them by polling.
MAX_RETRIES_REMEMBERED = 1000

# A message in flight, alone, when its worker died this many times is failed, alone.
QUARANTINE_AFTER = 2

_OUTCOME_NAMES = {OutboxStatus.SENT: "sent", OutboxStatus.PENDING: "retry", OutboxStatus.FAILED: "failed"}


def outcome_name(outcome: Outcome) -> str:
    """How logs and stats call an outcome: sent, retry, failed, or handed_back (attempt refunded)."""
    return "handed_back" if outcome.refund else _OUTCOME_NAMES[outcome.status]


_recycled = threading.local()  # per thread, as Django's connections are


def recycle_database_connection(*, force: bool = False, at_most_every: float = 0.0) -> None:
    """Drop a broken or expired database connection (any, with `force`); the next query reconnects.

    Never inside an atomic block: closing there would throw away the caller's
    transaction (a test case, or a caller running the worker inline). With
    `at_most_every`, skipped when this thread looked less than that many
    seconds ago: with CONN_HEALTH_CHECKS each look costs the next query a
    `SELECT 1` round trip, which per group of emails was a cost of its own.
    """
    if connection.in_atomic_block:
        return
    if force:
        connection.close()
        return
    now = time.monotonic()
    if at_most_every and now - getattr(_recycled, "at", -math.inf) < at_most_every:
        return
    _recycled.at = now
    close_old_connections()


def with_database_retry(operation: Callable[[], T], *, worker_id: str) -> T:
    """Run a write about sends already made, waiting out a short database outage.

    The emails have already gone out; giving up here would leave the rows to
    be taken back and sent again, so it is worth waiting for the database
    (the keeper keeps the rows ours meanwhile).
    """
    for delay in DATABASE_RETRY_DELAYS:
        try:
            return operation()
        except (DatabaseError, InterfaceError) as exc:
            if connection.in_atomic_block:
                raise  # the caller's transaction is broken; retrying inside it cannot work
            log_event(logger, logging.ERROR, "outbox.database_error", worker=worker_id, retry_in=delay, error=repr(exc))
            recycle_database_connection()
            # Not interruptible by shutdown: the result must be written.
            time.sleep(delay)
    return operation()


def quarantine_reason(row: OutboxMessage | OutboxTask, *, doing: str, done: str) -> str | None:
    """Why a row (an email or a task) its workers died on must not go out again, or None if it may.

    Failed alone after QUARANTINE_AFTER deaths of its worker while it was the
    only row of its group in flight (a row that crashes the worker: deaths with
    a whole group in flight make every member a suspect, sent alone from then
    on, but count against none), or when its last attempt was the interrupted
    one. `doing` and `done` word it for the row's kind: "sending it" / "sent",
    "running it" / "run".
    """
    if row.solo_interruptions >= QUARANTINE_AFTER:
        return (
            f"interrupted {row.solo_interruptions} times while it was the only one in flight "
            f"(the worker died while {doing}); not {done} again"
        )
    if row.interruptions and row.attempts >= row.max_attempts:
        return f"attempts exhausted ({row.attempts}/{row.max_attempts}), the last one interrupted"
    return None


def quarantine(message: OutboxMessage, *, worker_id: str) -> Outcome | None:
    """The outcome for a message not to send again after workers died sending it, or None to send it."""
    error = quarantine_reason(message, doing="sending it", done="sent")
    if error is None:
        return None
    now = timezone.now()
    record = Attempt(
        message_id=message.pk, attempt=message.attempts, try_number=1, worker=worker_id, started_at=now,
        finished_at=now, outcome=AttemptOutcome.ABANDONED, error=error,
    )  # fmt: skip
    return Outcome(message.pk, OutboxStatus.FAILED, error=error, attempts=[record])


def not_delivered(
    message: OutboxMessage, error: str, transient: bool, tries: list[Attempt], policy: RetryPolicy
) -> Outcome:
    """A delivery that did not go through: back to the queue with the backoff while attempts remain."""
    if transient and message.attempts < message.max_attempts:
        return Outcome(message.pk, OutboxStatus.PENDING, error, policy.backoff(message.attempts), tries)
    if transient:
        error = f"attempts exhausted ({message.attempts}/{message.max_attempts}): {error}"
    return Outcome(message.pk, OutboxStatus.FAILED, error, attempts=tries)


def abandoned(
    message: OutboxMessage,
    tries: list[Attempt],
    elapsed: float,
    deadline: float,
    worker_id: str,
    policy: RetryPolicy,
) -> Outcome:
    """The send outlived OUTBOX_SEND_DEADLINE: hand the row back, the attempt spent and recorded."""
    error = f"abandoned: the send took longer than OUTBOX_SEND_DEADLINE ({deadline:g} s)"
    now = timezone.now()
    record = Attempt(
        message_id=message.pk, attempt=message.attempts, try_number=len(tries) + 1, worker=worker_id,
        started_at=now - timedelta(seconds=elapsed), finished_at=now, outcome=AttemptOutcome.ABANDONED, error=error,
    )  # fmt: skip
    return not_delivered(message, error, True, [*tries, record], policy)


class OutcomeBook:
    def __init__(self, *, worker_id: str, finish_within: float) -> None:
        self.worker_id = worker_id
        self.finish_within = finish_within
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        # Rows claimed by this process whose outcome is not yet written: the
        # keeper extends their leases.
        self._in_hand: set[int] = set()
        self._unwritten: list[Outcome] = []
        self._oldest_unwritten: float | None = None  # monotonic
        # Held while outcomes are written, so a mark never overtakes a flush in flight.
        self._write_lock = threading.Lock()
        # When the retries this worker wrote come due (monotonic, a heap): an idle
        # sender wakes for each, as nothing notifies about a row due in the future.
        self._retries_due: list[float] = []

    # --- rows in hand --------------------------------------------------------

    def hold(self, message_ids: Iterable[int]) -> None:
        with self._lock:
            self._in_hand.update(message_ids)

    def in_hand(self) -> set[int]:
        with self._lock:
            return set(self._in_hand)

    def forget(self, message_ids: Iterable[int]) -> None:
        """No longer ours to keep alive: written, lost, or handed back."""
        with self._lock:
            self._in_hand.difference_update(message_ids)

    def forget_all_written(self, message_ids: Iterable[int]) -> None:
        """Forget those of `message_ids` without an outcome still waiting to be written."""
        with self._lock:
            waiting = {o.message_id for o in self._unwritten}
            self._in_hand.difference_update(pk for pk in message_ids if pk not in waiting)

    # --- outcomes ------------------------------------------------------------

    def add(self, outcome: Outcome) -> None:
        with self._lock:
            if not self._unwritten:
                self._oldest_unwritten = time.monotonic()
            self._unwritten.append(outcome)

    def _take(self) -> list[Outcome]:
        with self._lock:
            outcomes, self._unwritten, self._oldest_unwritten = self._unwritten, [], None
        return outcomes

    def overdue(self) -> bool:
        with self._lock:
            oldest = self._oldest_unwritten
        return oldest is not None and time.monotonic() - oldest >= self.finish_within

    def flush(self) -> None:
        """Write every outcome waiting."""
        with self._write_lock:
            outcomes = self._take()
            if outcomes:
                lost = with_database_retry(
                    lambda: outbox_finish(outcomes=outcomes, worker_id=self.worker_id), worker_id=self.worker_id
                )
                self._written(outcomes, lost)

    def flush_if_overdue(self) -> None:
        if self.overdue():
            self.flush()

    def mark_started(self, message_ids: Sequence[int]) -> dict[int, int]:
        """Mark messages started, writing every outcome waiting in the same transaction; see outbox_mark_started.

        The mark commits before the first send of the group: if a send kills
        the worker, the rows marked started are exactly this group (and any
        other sender's), every earlier outcome already written.
        """
        with self._write_lock:
            outcomes = self._take()
            attempts, lost = with_database_retry(
                lambda: outbox_mark_started(message_ids=message_ids, worker_id=self.worker_id, outcomes=outcomes),
                worker_id=self.worker_id,
            )
            self._written(outcomes, lost)
        return attempts

    def seconds_to_next_retry(self) -> float:
        """Seconds until a retry this worker scheduled is due: 0 if one just came due (then forgotten), inf if none."""
        with self._lock:
            now = time.monotonic()
            came_due = False
            while self._retries_due and self._retries_due[0] <= now:
                heapq.heappop(self._retries_due)  # the claim that follows takes every row due by now
                came_due = True
            if came_due:
                return 0.0
            return self._retries_due[0] - now if self._retries_due else float("inf")

    def _written(self, outcomes: list[Outcome], lost: list[int]) -> None:
        if not outcomes:
            return
        # Due at the database's now() + what was left of retry_in, no later than `retry_due`: never early.
        retries = [o.retry_due() for o in outcomes if o.retry_in and o.status == OutboxStatus.PENDING]
        with self._lock:
            for due in retries:
                if len(self._retries_due) < MAX_RETRIES_REMEMBERED:
                    heapq.heappush(self._retries_due, due)  # beyond that many, the poll interval finds them
            self.stats.update(outcome_name(o) for o in outcomes)
            if lost:
                self.stats["lease_lost"] += len(lost)
        self.forget(o.message_id for o in outcomes)
        if lost:
            log_event(logger, logging.WARNING, "outbox.lease_lost", worker=self.worker_id, rows=len(lost), ids=lost,
                      consequence="another worker took them back; they may be sent twice")  # fmt: skip
