"""The delivery loop behind `manage.py outbox_worker`.

Each turn: claim a batch in a short committed transaction, send outside any
transaction over one backend connection, write the outcomes with guarded
updates. A crash at any line leaves every row either finished or leased; a
lease that runs out makes the row claimable again (at-least-once delivery).
Beside the sender loop(s) run a lease keeper (so a slow send keeps its row)
and, on PostgreSQL, a LISTEN thread that wakes idle senders at commit time.
"""

import logging
import math
import os
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.core.mail import get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db import DatabaseError, InterfaceError, close_old_connections, connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.utils import timezone

from .background import LeaseKeeper, NotificationListener, Waker
from .claim import outbox_claim_batch
from .conf import outbox_settings
from .delivery import close_quietly, deliver
from .models import AttemptOutcome, DeliveryAttempt, OutboxMessage, OutboxStatus
from .retry import RetryPolicy
from .throttle import RateLimiter
from .transitions import Outcome, outbox_finish, outbox_release

logger = logging.getLogger("outbox_worker.worker")

T = TypeVar("T")

# Waits after a database error, growing up to the last one: the database
# restarting must cost a pause, never a crash loop or a message marked failed.
DATABASE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


def _recycle_database_connection(*, force: bool = False) -> None:
    """Drop a broken or expired database connection (any, with `force`); the next query reconnects.

    Never inside an atomic block: closing there would throw away the caller's
    transaction (a test case, or a caller running the worker inline).
    """
    if connection.in_atomic_block:
        return
    if force:
        connection.close()
    else:
        close_old_connections()


def _relax_commit_durability(sender: object, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    # See OutboxSettings.ASYNC_COMMIT: only this process's sessions are affected.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO OFF")


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class OutboxWorker:
    def __init__(
        self,
        *,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        lease_seconds: float | None = None,
        once: bool = False,
        concurrency: int = 1,
        notify: bool | None = None,
        rate: float | None = None,
        worker_id: str | None = None,
        policy: RetryPolicy | None = None,
        connection_factory: Callable[[], BaseEmailBackend] = get_connection,
    ) -> None:
        self.batch_size = batch_size or outbox_settings.BATCH_SIZE
        # Each sender thread claims its share of a batch: a thread that took a
        # whole batch would leave the others idle while it works through it
        # one slow send at a time.
        self.claim_size = max(1, math.ceil(self.batch_size / concurrency))
        self.poll_interval = outbox_settings.POLL_INTERVAL if poll_interval is None else poll_interval
        self.lease_seconds = lease_seconds or outbox_settings.LEASE_SECONDS
        self.once = once
        self.concurrency = concurrency
        self.notify = outbox_settings.NOTIFY if notify is None else notify
        self.rate_limiter = RateLimiter(rate) if rate else None
        self.finish_every = outbox_settings.FINISH_EVERY
        self.worker_id = worker_id or make_worker_id()
        self.policy = policy or RetryPolicy.from_settings()
        self.connection_factory = connection_factory
        self.stats: Counter[str] = Counter()
        self.waker = Waker()
        # Guards `stats` and `_in_hand`, which every sender thread updates.
        self._lock = threading.Lock()
        # Rows claimed by this process whose outcome is not yet written.
        self._in_hand: set[int] = set()
        self._stopping = threading.Event()

    # --- lifecycle ---------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._stopping.is_set():
            logger.warning("outbox.worker_abort worker=%s signal=%s", self.worker_id, signum)
            raise SystemExit(1)
        logger.info("outbox.worker_stopping worker=%s signal=%s", self.worker_id, signum)
        self.shutdown()

    def shutdown(self) -> None:
        """Stop claiming; messages in hand are finished first."""
        self._stopping.set()
        self.waker.bump()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> Counter[str]:
        """Deliver until shut down (or, with `once`, until nothing is due)."""
        listen = self.notify and not self.once and connection.vendor == "postgresql"
        logger.info(
            "outbox.worker_started worker=%s concurrency=%s batch_size=%s poll_interval=%s lease_seconds=%s notify=%s",
            self.worker_id, self.concurrency, self.batch_size, self.poll_interval, self.lease_seconds, listen,
        )  # fmt: skip
        if getattr(settings, "EMAIL_TIMEOUT", None) is None:
            # The lease keeper would keep a row hung on a silent server forever.
            logger.warning("outbox.no_email_timeout: set EMAIL_TIMEOUT, or a hung SMTP server blocks a sender for good")
        if outbox_settings.ASYNC_COMMIT:
            connection_created.connect(_relax_commit_durability, dispatch_uid="outbox_worker_async_commit")
            _recycle_database_connection(force=True)
        senders_done = threading.Event()
        keeper = LeaseKeeper(
            worker_id=self.worker_id, lease_seconds=self.lease_seconds, stopping=senders_done, in_hand=self._in_hand_ids
        )
        keeper.start()
        listener = NotificationListener(waker=self.waker, stopping=self._stopping) if listen else None
        if listener is not None:
            listener.start()
        try:
            if self.concurrency == 1:
                self._sender_loop()
            else:
                threads = [
                    threading.Thread(target=self._sender_thread, name=f"outbox-sender-{n}", daemon=True)
                    for n in range(self.concurrency)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        finally:
            self._stopping.set()
            if listener is not None:
                listener.stop()
            senders_done.set()
            keeper.join()
            connection_created.disconnect(dispatch_uid="outbox_worker_async_commit")
        logger.info("outbox.worker_stopped worker=%s %s", self.worker_id, _format_stats(self.stats))
        return self.stats

    def _sender_thread(self) -> None:
        try:
            self._sender_loop()
        finally:
            connection.close()  # this thread's own connection

    def _sender_loop(self) -> None:
        # One email connection per sender, kept open from batch to batch while
        # there is work, closed when the queue runs dry or after any error.
        backend = self.connection_factory()
        failures = 0
        try:
            while not self.stopping:
                _recycle_database_connection()
                since = self.waker.generation
                try:
                    claimed = self.process_batch(backend)
                    failures = 0
                except Exception as exc:  # one bad turn must never stop the queue
                    close_quietly(backend)
                    delay = DATABASE_RETRY_DELAYS[min(failures, len(DATABASE_RETRY_DELAYS) - 1)]
                    failures += 1
                    if isinstance(exc, (DatabaseError, InterfaceError)):
                        logger.error(
                            "outbox.database_error worker=%s retry_in=%.1fs error=%r", self.worker_id, delay, exc
                        )
                    else:
                        logger.exception("outbox.unexpected_error worker=%s retry_in=%.1fs", self.worker_id, delay)
                    _recycle_database_connection()
                    self._stopping.wait(delay)
                    continue
                if claimed == 0:
                    close_quietly(backend)
                    if self.once:
                        break
                    self.waker.wait(since, self.poll_interval)
        finally:
            close_quietly(backend)

    # --- one batch -----------------------------------------------------------

    def _in_hand_ids(self) -> list[int]:
        with self._lock:
            return list(self._in_hand)

    def process_batch(self, backend: BaseEmailBackend) -> int:
        """Claim and deliver one batch over `backend`; return how many messages were claimed."""
        messages = outbox_claim_batch(
            worker_id=self.worker_id, limit=self.claim_size, lease_seconds=self.lease_seconds, now=timezone.now()
        )
        if not messages:
            return 0
        unstarted = {message.pk for message in messages}
        with self._lock:
            self._in_hand.update(unstarted)
        outcomes: list[Outcome] = []
        try:
            oldest_unwritten = 0.0
            for message in messages:
                if self.stopping:
                    break
                # Write what we have before the next send once there are enough
                # outcomes, or once the oldest has waited FINISH_WITHIN seconds:
                # the re-send window of a crash stays small with a slow provider too.
                if outcomes and (
                    len(outcomes) >= self.finish_every
                    or time.monotonic() - oldest_unwritten >= outbox_settings.FINISH_WITHIN
                ):
                    self._write(outcomes)
                    outcomes = []
                # Once in hand, a message is never "released": if we die now it
                # may already be with the provider, so only its lease brings it back.
                unstarted.discard(message.pk)
                if self.rate_limiter is not None:
                    self.rate_limiter.acquire()
                outcomes.append(self._deliver(message, backend))
                if len(outcomes) == 1:
                    oldest_unwritten = time.monotonic()
        finally:
            try:
                if outcomes:
                    self._write(outcomes)
                if unstarted:
                    released = outbox_release(message_ids=unstarted, worker_id=self.worker_id, now=timezone.now())
                    logger.info("outbox.released worker=%s count=%s", self.worker_id, released)
            finally:
                # Written or not, these rows are no longer ours to keep alive:
                # any whose outcome was lost come back when their lease ends.
                with self._lock:
                    self._in_hand.difference_update(message.pk for message in messages)
        return len(messages)

    def _deliver(self, message: OutboxMessage, backend: BaseEmailBackend) -> Outcome:
        if message.attempts > message.max_attempts:
            # Every earlier delivery ended with its worker gone mid-send.
            now = timezone.now()
            error = f"interrupted {message.attempts - 1} times (worker stopped or crashed mid-send); giving up"
            abandoned = DeliveryAttempt(
                message_id=message.pk, attempt=message.attempts, worker=self.worker_id, started_at=now,
                finished_at=now, outcome=AttemptOutcome.ABANDONED, error=error,
            )  # fmt: skip
            return Outcome(message.pk, OutboxStatus.FAILED, error=error, attempts=[abandoned])

        started = time.monotonic()
        result = deliver(
            message,
            connection=backend,
            policy=self.policy,
            worker_id=self.worker_id,
            sleep=self._stopping.wait,
            should_stop=lambda: self.stopping,
        )
        if result.sent:
            outcome = Outcome(message.pk, OutboxStatus.SENT, attempts=result.attempts)
        elif result.transient and message.attempts < message.max_attempts:
            retry_at = timezone.now() + self.policy.backoff(message.attempts)
            outcome = Outcome(message.pk, OutboxStatus.PENDING, result.error, retry_at, result.attempts)
        else:
            error = result.error
            if result.transient:
                error = f"attempts exhausted ({message.attempts}/{message.max_attempts}): {error}"
            outcome = Outcome(message.pk, OutboxStatus.FAILED, error=error, attempts=result.attempts)
        logger.info(
            "outbox.delivery id=%s attempt=%s outcome=%s tries=%s duration_ms=%.1f",
            message.pk, message.attempts, _OUTCOME_NAMES[outcome.status], len(result.attempts),
            (time.monotonic() - started) * 1000,
        )  # fmt: skip
        return outcome

    def _write(self, outcomes: list[Outcome]) -> None:
        lost = self._with_database_retry(
            lambda: outbox_finish(outcomes=outcomes, worker_id=self.worker_id, now=timezone.now())
        )
        with self._lock:
            self.stats.update(_OUTCOME_NAMES[o.status] for o in outcomes)
            if lost:
                self.stats["lease_lost"] += lost
        if lost:
            logger.warning(
                "outbox.lease_lost worker=%s rows=%s ids=%s: another worker took them; they may be sent twice",
                self.worker_id, lost, [o.message_id for o in outcomes],
            )  # fmt: skip

    def _with_database_retry(self, operation: Callable[[], T]) -> T:
        """Run a finishing write, waiting out a short database outage.

        The emails have already gone out; giving up here would leave the rows
        to their leases and send them again, so it is worth waiting for the
        database (the lease keeper keeps the rows ours meanwhile).
        """
        for delay in DATABASE_RETRY_DELAYS:
            try:
                return operation()
            except (DatabaseError, InterfaceError) as exc:
                logger.error("outbox.database_error worker=%s retry_in=%.1fs error=%r", self.worker_id, delay, exc)
                _recycle_database_connection()
                # Not interruptible by shutdown: the result must be written.
                time.sleep(delay)
        return operation()


_OUTCOME_NAMES = {OutboxStatus.SENT: "sent", OutboxStatus.PENDING: "retry", OutboxStatus.FAILED: "failed"}


def _format_stats(stats: Counter[str]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(stats.items())) or "idle=1"
