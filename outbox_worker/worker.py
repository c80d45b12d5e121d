"""The delivery loop behind `manage.py outbox_worker`.

Each turn a sender takes a small group of messages from the process's
backlog (backlog.py: one claim, in a short committed transaction, charging
nothing, feeds every sender), marks the group started (its attempt is
counted, in the same transaction as earlier outcomes) and sends it outside
any transaction. A crash at any line leaves every row either
finished, or held by a worker whose heartbeat goes stale so another worker
takes it back: rows never started cost nothing, rows in the started group
cost one attempt, and a message that kills the worker twice is failed alone.

Tasks (`@task` functions queued through outbox_worker.tasks.OutboxBackend)
ride the same loop: each turn a sender takes one group of emails, then claims
one small batch of tasks (tasks_run.py), so a full queue of either kind never
starves the other; a long task holds only its own sender (use --concurrency).

Beside the sender loop(s) run a keeper thread (heartbeat, leases, the
outcome flush, the send deadline) and, on PostgreSQL, a LISTEN thread that
wakes idle senders at commit time.
"""

import logging
import math
import os
import secrets
import signal
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.core.mail import get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db import DatabaseError, InterfaceError, connection

from .background import Keeper, NotificationListener, SendDeadline, Waker
from .backlog import Backlog
from .claim import outbox_claim_batch
from .conf import outbox_settings
from .delivery import DeliveryResult, close_quietly, deliver
from .errors import Blame, Classified, classify
from .idle import IdleLock, IdleSiblings
from .logevents import log_event
from .models import OutboxMessage, OutboxStatus
from .outcomes import (
    DATABASE_RETRY_DELAYS,
    OutcomeBook,
    abandoned,
    not_delivered,
    outcome_name,
    quarantine,
    recycle_database_connection,
    with_database_retry,
)
from .provider import Admission, ProviderGate
from .retry import RetryPolicy
from .tasks_run import TaskRunner
from .throttle import RateLimiter
from .transitions import Outcome, outbox_release

logger = logging.getLogger("outbox_worker.worker")


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
        queues: Sequence[str] | None = None,
    ) -> None:
        """`queues`: the task queues to run (None: every queue; empty: no tasks, emails only)."""
        self.batch_size = batch_size or outbox_settings.BATCH_SIZE
        self.poll_interval = outbox_settings.POLL_INTERVAL if poll_interval is None else poll_interval
        self.lease_seconds = lease_seconds or outbox_settings.LEASE_SECONDS
        self.once = once
        self.concurrency = concurrency
        self.notify = outbox_settings.NOTIFY if notify is None else notify
        self.rate_limiter = RateLimiter(rate) if rate else None
        self.group_size = max(1, outbox_settings.FINISH_EVERY)
        self.deadline = SendDeadline(seconds=outbox_settings.SEND_DEADLINE)
        self.worker_id = worker_id or make_worker_id()
        self.policy = policy or RetryPolicy.from_settings()
        self.connection_factory = connection_factory
        self.book = OutcomeBook(worker_id=self.worker_id, finish_within=outbox_settings.FINISH_WITHIN)
        self.backlog = Backlog(
            claim=partial(outbox_claim_batch, worker_id=self.worker_id, lease_seconds=self.lease_seconds),
            batch_size=self.batch_size, group_size=self.group_size, senders=concurrency, book=self.book,
            hold_off=0.0 if once else max(0.0, min(outbox_settings.CLAIM_HOLD_OFF, self.poll_interval)),
        )  # fmt: skip
        self.stats = self.book.stats
        self.waker = Waker()
        # One per process, shared by the senders: a provider that fails us
        # pauses them all, one probe tests it, the first success resumes.
        self.gate = ProviderGate(worker_id=self.worker_id)
        # One message already interrupted at a time per process, held from its
        # mark to the end of its send: if it kills the worker again, no other
        # suspect is caught marked with it (and failed for its second time).
        self._suspect_lock = threading.Lock()
        self._stopping = threading.Event()
        # Set by run() when this worker LISTENs: only then do idle senders hold the idle lock.
        self._listening = False
        self._idle_siblings = IdleSiblings()
        self._once_wait_until: float | None = None
        # None: this worker runs no tasks (`--queues ""`).
        self.tasks: TaskRunner | None = None
        if queues is None or queues:
            self.tasks = TaskRunner(
                worker_id=self.worker_id, queues=queues, lease_seconds=self.lease_seconds,
                batch_size=min(math.ceil(self.batch_size / concurrency), outbox_settings.TASK_BATCH_SIZE),
                policy=self.policy, stopping=lambda: self.stopping, recheck_every=max(0.2, self.poll_interval),
            )  # fmt: skip

    # --- lifecycle ---------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._stopping.is_set():
            log_event(logger, logging.WARNING, "outbox.worker_abort", worker=self.worker_id, signal=signum)
            raise SystemExit(1)
        log_event(logger, logging.INFO, "outbox.worker_stopping", worker=self.worker_id, signal=signum)
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
        # Inside the caller's transaction (a test case, an inline call) other
        # connections cannot see our rows: everything then runs on this one.
        inline = connection.in_atomic_block
        listen = self.notify and not self.once and not inline and connection.vendor == "postgresql"
        self._listening = listen
        log_event(
            logger, logging.INFO, "outbox.worker_started", worker=self.worker_id,
            concurrency=1 if inline else self.concurrency, batch_size=self.batch_size,
            poll_interval=self.poll_interval, lease_seconds=self.lease_seconds,
            send_deadline=self.deadline.seconds, notify=listen,
        )  # fmt: skip
        if getattr(settings, "EMAIL_TIMEOUT", None) is None:
            log_event(logger, logging.WARNING, "outbox.no_email_timeout", advice="set EMAIL_TIMEOUT")
        senders_done = threading.Event()
        keeper = Keeper(
            worker_id=self.worker_id, lease_seconds=self.lease_seconds, stopping=senders_done,
            lease_ids=self._lease_ids, flush_due=self.book.flush_if_overdue, enforce_deadline=self.deadline.enforce,
            pause_state=self._pause_state, use_database=not inline,
            task_lease_ids=self.tasks.in_hand if self.tasks else None,
        )  # fmt: skip
        if inline:
            keeper.beat()
        keeper.start()
        # Claim only once others can see we are alive, or they would take our rows back.
        while not inline and not keeper.first_beat.wait(0.5):
            if self.stopping:
                break
        listener = NotificationListener(waker=self.waker, stopping=self._stopping) if listen else None
        if listener is not None:
            listener.start()
        try:
            # Sender threads would each open a connection of their own, and those
            # cannot see the caller's uncommitted rows: an inline run sends alone.
            if self.concurrency == 1 or inline:
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
            try:  # claimed, but no sender took them: due again at once, uncharged
                if rows := self.backlog.take_all():
                    self._hand_back([m.pk for m in rows], None)
            finally:
                if listener is not None:
                    listener.stop()
                senders_done.set()
            keeper.join()
            if inline:
                keeper.gone()
        if self.tasks is not None:
            self.stats.update(self.tasks.stats)
        stats = dict(sorted(self.stats.items()))
        # How many claims it took: under a trickle the hold-off keeps this far below the emails sent.
        claims = {"email_claims": self.backlog.claims.begun}
        if self.tasks is not None:
            claims["task_claims"] = self.tasks.claims.begun
        log_event(logger, logging.INFO, "outbox.worker_stopped", worker=self.worker_id, **stats, **claims)
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
        # Held on this sender's own connection while it sleeps: enqueues NOTIFY only then (idle.py).
        idle = IdleLock(self._idle_siblings) if self._listening else None
        try:
            while not self.stopping:
                if idle is None or not idle.held:
                    # Never under the idle lock: a session lock ends with its connection.
                    recycle_database_connection(at_most_every=RECYCLE_EVERY)
                since = self.waker.generation
                # Claims a sibling begins from here on answer for this sender too, unless it holds
                # the idle lock: the claim made under it must see what committed before (idle.py).
                holding = idle is not None and idle.held
                email_ticket = None if holding else self.backlog.claims.ticket()
                task_ticket = None if holding or self.tasks is None else self.tasks.claims.ticket()
                if self.once and self.gate.paused:
                    # "Everything due now" cannot go out while the provider fails
                    # us; the rows wait, due when the pause ends, for the next run.
                    log_event(logger, logging.WARNING, "outbox.once_stopped_by_pause", worker=self.worker_id,
                              reason=self.gate.reason)  # fmt: skip
                    break
                # While the provider gate is paused, tasks still run; with no
                # tasks to run the sender waits out the pause instead.
                admission = self._admission_to_claim(wait=self.tasks is None)
                try:
                    # Claimed under the idle lock (step 2), the batch is sent without it.
                    on_claim = idle.release if idle is not None else None
                    claimed = 0
                    if admission is not None:
                        claimed = self.process_batch(
                            backend, admission=admission, on_claim=on_claim, ticket=email_ticket
                        )
                    # Emails in flow: tasks are checked on a wake-up or every poll interval;
                    # trickling in (claims paced): once per hold-off; no email due: always
                    # (the idle path, and --once's end).
                    paced = self.backlog.paced_until() - time.monotonic()
                    ran = 0
                    if self.tasks is not None:
                        ran = self.tasks.process_batch(
                            force=claimed == 0 and paced <= 0, generation=since, ticket=task_ticket,
                            recheck_every=self.backlog.hold_off if paced > 0 else None,
                        )  # fmt: skip
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - one bad turn must never stop the queue
                    close_quietly(backend)
                    delay = DATABASE_RETRY_DELAYS[min(failures, len(DATABASE_RETRY_DELAYS) - 1)]
                    failures += 1
                    database = isinstance(exc, (DatabaseError, InterfaceError))
                    log_event(
                        logger, logging.ERROR, "outbox.database_error" if database else "outbox.unexpected_error",
                        worker=self.worker_id, retry_in=delay, error=repr(exc),
                        **({} if database else {"traceback": traceback.format_exc()}),
                    )  # fmt: skip
                    if idle is not None:
                        idle.release()
                    recycle_database_connection()
                    self._stopping.wait(delay)
                    continue
                if idle is not None and (claimed or ran):
                    idle.release()  # busy: enqueues need not wake this sender
                if admission is None and self.tasks is None:
                    if idle is not None:
                        idle.release()  # paused: enqueues must not keep notifying a sender that cannot claim
                    continue  # paused: waited, ask again
                if claimed == 0:
                    # Not under the idle lock: this session's own writes would not NOTIFY (a lock never
                    # conflicts with its holder), and a row handed back due now must wake the other workers.
                    if idle is None or not idle.held:
                        self.book.flush()
                    if paced <= 0:  # emails trickling in (claims paced): the connection stays open
                        close_quietly(backend)
                if claimed == 0 and admission is not None and admission.probe:
                    self._no_probe()
                if claimed == 0 and ran == 0:
                    if self.once:
                        if not self._once_should_wait():
                            break
                        self._stopping.wait(ONCE_RECHECK)  # not the poll interval: other workers are finishing
                        continue
                    # Paused with tasks to serve: back when the pause ends, or a task comes.
                    pause = self.gate.retry_in() if admission is None else self.poll_interval
                    # A retry this worker scheduled (a quick one, ~1 s) wakes it when due: no NOTIFY fires for it.
                    retry_due = self.book.seconds_to_next_retry()
                    timeout = max(0.05, min(self.poll_interval, pause, retry_due))
                    if paced > 0 and admission is not None:
                        # Out of the idle lock meanwhile: what is enqueued now notifies nobody,
                        # and the claim after the wait takes it all.
                        if idle is not None:
                            idle.release()
                        self._stopping.wait(min(paced, timeout))
                        continue
                    if idle is not None and admission is not None:
                        idle.rest(self.waker, since, timeout, stopping=self._stopping)
                        continue
                    if idle is not None:
                        idle.release()  # paused: the claim that would follow a notification is not ours to make
                    self.waker.wait(since, timeout)
        finally:
            if idle is not None:
                idle.release(hand_over=True)
            close_quietly(backend)
            self.book.flush()

    def _admission_to_claim(self, *, wait: bool = True) -> Admission | None:
        """Whether this sender may claim emails now: always, unless the provider gate is paused.

        While paused a sender claims no email (other workers, whose provider
        may be fine, can take the rows) and waits for the pause to end (with
        `wait`; else returns None at once); then one sender is admitted as the
        probe and claims a single message.
        """
        if not self.gate.paused:
            return _GO
        admission = self.gate.admit()
        if not admission.send:
            if wait:
                self._stopping.wait(admission.wait)
            return None
        return admission

    def _no_probe(self) -> None:
        # Admitted as the probe but nothing was due: tell the gate it learned
        # nothing, so the next sender to find a message can probe at once.
        self.gate.record_failure(Classified(Blame.MESSAGE, True, None, "nothing to probe with"), probe=True)

    def _once_should_wait(self) -> bool:
        """Under --once, whether to wait for rows that other workers hold.

        A worker killed a moment ago still looks alive until its heartbeat goes
        stale; waiting that long (once) lets --once take its rows too instead of
        exiting with them stuck in `sending`. Rows of live workers end the wait
        when the staleness window has passed.
        """
        if self._once_wait_until is None:
            horizon = outbox_settings.WORKER_STALE_AFTER + outbox_settings.HEARTBEAT_SECONDS
            self._once_wait_until = time.monotonic() + horizon
        if time.monotonic() > self._once_wait_until:
            return False
        held = OutboxMessage.objects.filter(status=OutboxStatus.SENDING).exclude(locked_by=self.worker_id).exists()
        return held or (self.tasks is not None and self.tasks.held_elsewhere())

    # --- one batch -----------------------------------------------------------

    def _lease_ids(self) -> list[int]:
        return list(self.book.in_hand() - self.deadline.overdue_ids())

    def _pause_state(self) -> tuple:
        return self.gate.paused_since, self.gate.reason

    def process_batch(
        self,
        backend: BaseEmailBackend,
        *,
        admission: Admission | None = None,
        on_claim: Callable[[], None] | None = None,
        ticket: int | None = None,
    ) -> int:
        """Take one group from the backlog and deliver it over `backend`; return its size (0: nothing due).

        `admission` is the provider gate's answer the claim was made under:
        the probe claims one message and sends it as the probe. `on_claim`
        runs once messages are claimed, before any is sent. `ticket`: see
        `Backlog.take`.
        """
        admission = admission or _GO
        messages = self.backlog.take(on_claim=on_claim, probe=admission.probe, ticket=ticket)
        if not messages:
            return 0
        waiting = list(messages)  # claimed, not yet sent
        marked: set[int] = set()
        hand_back_in: float | None = None  # set when the provider gate stops the batch
        hand_back_error = ""  # why, when the connection could not be made
        next_admission: Admission | None = admission
        suspect_in_hand = False  # holding _suspect_lock, from its mark to the end of its send
        try:
            while waiting and not self.stopping:
                message = waiting[0]
                # Judged as claimed, never after the mark: marking a suspect for
                # its last attempt makes attempts == max_attempts, which the rule
                # would read as "the last one was interrupted" and fail it unsent.
                if message.pk not in marked:
                    if quarantined := quarantine(message, worker_id=self.worker_id):
                        waiting.pop(0)
                        self.book.add(quarantined)
                        continue
                    group = list(waiting)  # the backlog gives a suspect alone
                    probe = next_admission is not None and next_admission.probe
                    if (refused := self._connect(backend, probe=probe)) is not None:
                        hand_back_in, hand_back_error = refused
                        waiting.extend(self.backlog.take_all())  # the provider fails us: the backlog goes back too
                        break
                    if group[0].interruptions:
                        self._suspect_lock.acquire()
                        suspect_in_hand = True
                    attempts = self.book.mark_started([m.pk for m in group])
                    for member in group:
                        if member.pk in attempts:
                            member.attempts = attempts[member.pk]
                            marked.add(member.pk)
                        else:  # taken back by another worker meanwhile: not ours to send
                            waiting.remove(member)
                            self.book.forget([member.pk])
                    if suspect_in_hand and group[0].pk not in marked:
                        self._suspect_lock.release()
                        suspect_in_hand = False
                    continue
                current = next_admission or self.gate.admit()
                next_admission = None
                if not current.send:
                    # The provider is failing us: the rest of the group and the backlog
                    # go back at once, uncharged, due when the pause ends.
                    hand_back_in = current.wait
                    waiting.extend(self.backlog.take_all())
                    break
                waiting.pop(0)
                if self.rate_limiter is not None:
                    self.rate_limiter.acquire()
                outcome = self._deliver(message, backend, probe=current.probe)
                if suspect_in_hand:
                    self._suspect_lock.release()
                    suspect_in_hand = False
                self.book.add(outcome)
                self.book.flush_if_overdue()
        finally:
            if suspect_in_hand:
                self._suspect_lock.release()
            # The outcomes of this batch's last group are written with the next
            # group's mark (or when the queue runs dry, or by the keeper after
            # FINISH_WITHIN): a commit per batch saved.
            try:
                if waiting:
                    self._hand_back([m.pk for m in waiting], hand_back_in, error=hand_back_error)
            finally:
                # Written, handed back or not, this batch's rows are no longer
                # ours to keep alive: any whose write failed come back when
                # their lease runs out.
                self.book.forget_all_written({m.pk for m in [*messages, *waiting]})
        return len(messages)

    def _connect(self, backend: BaseEmailBackend, *, probe: bool) -> tuple[float, str] | None:
        """Open the email connection before a group is marked started; None if open, else (hand back for, why).

        A message is charged and counts as in flight from its mark: marked
        before a connection that cannot be made (an outage, where each try
        takes a reconnect's waits), it would be charged nothing in the end but
        count against it if the worker died meanwhile. A no-op on an open
        connection; the provider gate learns of a failure as of a failed send.
        """
        try:
            for retry_state in self.policy.retrying(sleep=self._stopping.wait, should_stop=lambda: self.stopping):
                with retry_state:
                    backend.open()
        except Exception as exc:  # noqa: BLE001 - classified below; anything else is left to the send
            close_quietly(backend)
            verdict = classify(exc)
            if not verdict.provider_level:
                return None
            self.gate.record_failure(verdict, probe=probe)
            log_event(logger, logging.WARNING, "outbox.connect_failed", worker=self.worker_id,
                      error=verdict.description, paused=self.gate.paused)  # fmt: skip
            return self.gate.retry_in(), verdict.description
        return None

    def _hand_back(self, ids: list[int], retry_in: float | None, *, error: str = "") -> None:
        delay = timedelta(seconds=retry_in) if retry_in else None
        released = with_database_retry(
            lambda: outbox_release(message_ids=ids, worker_id=self.worker_id, retry_in=delay, error=error),
            worker_id=self.worker_id,
        )
        log_event(logger, logging.INFO, "outbox.released", worker=self.worker_id, count=released,
                  due_in_s=round(retry_in or 0, 1), paused=self.gate.paused)  # fmt: skip

    def _deliver(self, message: OutboxMessage, backend: BaseEmailBackend, *, probe: bool = False) -> Outcome:
        started = self.deadline.begin(message.pk, backend)
        try:
            result = deliver(
                message,
                connection=backend,
                policy=self.policy,
                worker_id=self.worker_id,
                sleep=self._stopping.wait,
                should_stop=lambda: self.stopping or self.deadline.is_overdue(message.pk),
            )
        finally:
            overdue = self.deadline.end(message.pk)
        if overdue:
            close_quietly(backend)  # cut under the sender: the next message needs a new connection
            if probe:
                self._no_probe()
            elapsed = time.monotonic() - started
            outcome = abandoned(message, result.attempts, elapsed, self.deadline.seconds, self.worker_id, self.policy)
        else:
            outcome = self._judge(message, result, probe=probe)
        log_event(
            logger, logging.INFO, "outbox.delivery", id=message.pk, attempt=message.attempts,
            outcome=outcome_name(outcome), tries=len(result.attempts),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )  # fmt: skip
        return outcome

    def _judge(self, message: OutboxMessage, result: DeliveryResult, *, probe: bool) -> Outcome:
        """Turn a delivery into an outcome, telling the provider gate what it learned."""
        if result.sent:
            self.gate.record_success(message_id=message.pk)
            return Outcome(
                message.pk, OutboxStatus.SENT, attempts=result.attempts, provider_message_id=result.provider_message_id
            )
        verdict = self.gate.record_failure(result.verdict, message_id=message.pk, probe=probe)
        if verdict.provider_level:
            # Nothing to do with the message: back to the queue with its attempt
            # refunded, due when this worker's pause ends.
            wait = self.gate.retry_in()
            retry_in = timedelta(seconds=wait) if wait else None
            error = verdict.description
            return Outcome(message.pk, OutboxStatus.PENDING, error, retry_in, result.attempts, refund=True)
        return not_delivered(message, verdict.description, verdict.transient, result.attempts, self.policy)


# Seconds between a sender's checks for an expired database connection (after an error: at once).
RECYCLE_EVERY = 1.0
# Under --once, seconds between looks at rows other workers still hold (a sibling of --processes
# finishing its last batch): the pass ends this soon after theirs, not a poll interval later.
ONCE_RECHECK = 0.2

# What a sender may do when the provider gate is not paused.
_GO = Admission(send=True, probe=False, wait=0.0)
