"""The delivery loop behind `manage.py outbox_worker`.

Each turn: claim a batch in a short committed transaction, send outside any
transaction over one backend connection, finish each row with a guarded
update. A crash at any line leaves every row either finished or leased; a
lease that runs out makes the row claimable again (at-least-once delivery).
"""

import logging
import os
import secrets
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from django.core.mail import get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db import DatabaseError, InterfaceError, close_old_connections, connection
from django.utils import timezone

from .claim import outbox_claim_batch
from .conf import outbox_settings
from .delivery import deliver
from .models import AttemptOutcome, DeliveryAttempt, OutboxMessage
from .retry import RetryPolicy
from .transitions import (
    outbox_extend_lease,
    outbox_mark_failed,
    outbox_mark_retry,
    outbox_mark_sent,
    outbox_release,
)

logger = logging.getLogger("outbox_worker.worker")

T = TypeVar("T")

# Waits after a database error, doubling up to the last one: the database
# restarting must cost a pause, never a crash loop or a message marked failed.
DATABASE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


def _recycle_database_connection() -> None:
    """Drop a broken or expired database connection; the next query reconnects.

    Never inside an atomic block: closing there would throw away the caller's
    transaction (a test case, or a caller running the worker inline).
    """
    if not connection.in_atomic_block:
        close_old_connections()


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
        worker_id: str | None = None,
        policy: RetryPolicy | None = None,
        connection_factory: Callable[[], BaseEmailBackend] = get_connection,
    ) -> None:
        self.batch_size = batch_size or outbox_settings.BATCH_SIZE
        self.poll_interval = outbox_settings.POLL_INTERVAL if poll_interval is None else poll_interval
        self.lease_seconds = lease_seconds or outbox_settings.LEASE_SECONDS
        self.once = once
        self.worker_id = worker_id or make_worker_id()
        self.policy = policy or RetryPolicy.from_settings()
        self.connection_factory = connection_factory
        self.stats: Counter[str] = Counter()
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
        self._stopping.set()

    def shutdown(self) -> None:
        """Stop claiming; the message in hand is finished first."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> Counter[str]:
        """Deliver until shut down (or, with `once`, until nothing is due)."""
        logger.info(
            "outbox.worker_started worker=%s batch_size=%s poll_interval=%s lease_seconds=%s",
            self.worker_id,
            self.batch_size,
            self.poll_interval,
            self.lease_seconds,
        )
        db_failures = 0
        while not self.stopping:
            _recycle_database_connection()
            try:
                claimed = self.process_batch()
                db_failures = 0
            except (DatabaseError, InterfaceError) as exc:
                delay = DATABASE_RETRY_DELAYS[min(db_failures, len(DATABASE_RETRY_DELAYS) - 1)]
                db_failures += 1
                logger.error("outbox.database_error worker=%s retry_in=%.1fs error=%r", self.worker_id, delay, exc)
                _recycle_database_connection()
                self._stopping.wait(delay)
                continue
            if claimed == 0:
                if self.once:
                    break
                self._stopping.wait(self.poll_interval)
        logger.info("outbox.worker_stopped worker=%s %s", self.worker_id, _format_stats(self.stats))
        return self.stats

    # --- one batch -----------------------------------------------------------

    def process_batch(self) -> int:
        """Claim and deliver one batch; return how many messages were claimed."""
        now = timezone.now()
        messages = outbox_claim_batch(
            worker_id=self.worker_id, limit=self.batch_size, lease_seconds=self.lease_seconds, now=now
        )
        if not messages:
            return 0
        unstarted = {message.pk for message in messages}
        lease_until = now.timestamp() + self.lease_seconds
        backend = self.connection_factory()
        try:
            for message in messages:
                if self.stopping:
                    break
                # Keep the lease well ahead of the work still to do in this batch.
                if timezone.now().timestamp() > lease_until - self.lease_seconds / 2:
                    renewed_at = timezone.now()
                    outbox_extend_lease(
                        message_ids=unstarted,
                        worker_id=self.worker_id,
                        now=renewed_at,
                        lease_seconds=self.lease_seconds,
                    )
                    lease_until = renewed_at.timestamp() + self.lease_seconds
                # Once in hand, a message is never "released": if we die now it
                # may already be with the provider, so only its lease brings it back.
                unstarted.discard(message.pk)
                self._handle(message, backend)
        finally:
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - a broken connection must not block the release below
                pass
            if unstarted:
                released = outbox_release(message_ids=unstarted, worker_id=self.worker_id, now=timezone.now())
                logger.info("outbox.released worker=%s count=%s", self.worker_id, released)
        return len(messages)

    def _handle(self, message: OutboxMessage, backend: BaseEmailBackend) -> None:
        if message.attempts > message.max_attempts:
            # Every earlier delivery ended with its worker gone mid-send.
            now = timezone.now()
            error = f"interrupted {message.attempts - 1} times (worker stopped or crashed mid-send); giving up"
            abandoned = DeliveryAttempt(
                message_id=message.pk,
                attempt=message.attempts,
                worker=self.worker_id,
                started_at=now,
                finished_at=now,
                outcome=AttemptOutcome.ABANDONED,
                error=error,
            )
            self._finish(outbox_mark_failed, message, "failed", now=now, error=error, attempts=[abandoned])
            return

        result = deliver(
            message,
            connection=backend,
            policy=self.policy,
            worker_id=self.worker_id,
            sleep=self._stopping.wait,
            should_stop=lambda: self.stopping,
        )
        now = timezone.now()
        if result.sent:
            self._finish(outbox_mark_sent, message, "sent", now=now, attempts=result.attempts)
        elif result.transient and message.attempts < message.max_attempts:
            self._finish(
                outbox_mark_retry,
                message,
                "retry",
                now=now,
                attempts=result.attempts,
                error=result.error,
                available_at=now + self.policy.backoff(message.attempts),
            )
        else:
            error = result.error
            if result.transient:
                error = f"attempts exhausted ({message.attempts}/{message.max_attempts}): {error}"
            self._finish(outbox_mark_failed, message, "failed", now=now, error=error, attempts=result.attempts)

    def _finish(self, mark: Callable[..., bool], message: OutboxMessage, outcome: str, **kwargs: object) -> None:
        still_held = self._with_database_retry(lambda: mark(message_id=message.pk, worker_id=self.worker_id, **kwargs))
        self.stats[outcome] += 1
        if still_held:
            logger.info("outbox.finished id=%s attempt=%s outcome=%s", message.pk, message.attempts, outcome)
        else:
            self.stats["lease_lost"] += 1
            logger.warning(
                "outbox.lease_lost id=%s attempt=%s outcome=%s worker=%s: another worker took the row",
                message.pk,
                message.attempts,
                outcome,
                self.worker_id,
            )

    def _with_database_retry(self, operation: Callable[[], T]) -> T:
        """Run a finishing write, waiting out a short database outage.

        The email has already gone out; giving up here would leave the row to
        its lease and send it again, so it is worth waiting for the database.
        """
        for delay in DATABASE_RETRY_DELAYS:
            try:
                return operation()
            except (DatabaseError, InterfaceError) as exc:
                logger.error("outbox.database_error worker=%s retry_in=%.1fs error=%r", self.worker_id, delay, exc)
                _recycle_database_connection()
                # Not interruptible by shutdown: the result must be written.
                threading.Event().wait(delay)
        return operation()


def _format_stats(stats: Counter[str]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(stats.items())) or "idle=1"
