"""The provider gate: when the provider fails us, stop sending, probe now and then, resume on the first success.

One gate is shared by the sender threads of one worker process. Each sender
asks `admit()` before a send and reports every outcome with `record_success()`
or `record_failure(verdict)`. A provider-level failure (the connection, TLS,
AUTH, our sender refused …; see errors.py) pauses delivery: senders hold their
messages back, and when the pause ends exactly one of them is admitted as the
probe. The probe's failure doubles the pause (1 s, 2 s, 4 s … capped at 5 min,
jittered); its success, or any other message the provider answers about,
resumes delivery. A message held back spends no attempt.

Where the evidence ties a provider-level refusal to one message, it counts
against that message. A refusal of something the message carries (MAIL FROM
refusing its own `from_email`) makes the message a suspect; if the provider
then accepts another message and the suspect is refused the same way again,
that refusal is returned as message-level (permanent for a 5xx, transient for
a 4xx), and does not touch the pause.

Why this can neither burn the queue nor loop forever:
- no refusal is charged to a message unless another message went through
  after it: in a real outage nothing goes through, so nothing is charged, and
  every message waits for the provider to come back;
- a message refused for reasons of its own is charged at its next refusal once
  any other message is accepted, and then ends by the message-level rules (a
  5xx fails it at once; a 4xx spends attempts). Until another message gets
  through it is indistinguishable from an outage and is kept, probed at most
  once per capped pause: the worker should put a held-back message back with
  `available_at` at the end of the pause, so the next probe can be another one;
- a probe that never reports (its sender stopped or crashed) is replaced after
  `probe_timeout` seconds; suspects are bounded (the oldest are forgotten) and
  live in memory, so a restart costs probes, never a message.

The gate logs `outbox.delivery_paused` and `outbox.delivery_resumed` once per
change of state (not per message) and records the pause on the worker's
heartbeat row (`outbox_worker_paused`), where outbox_status and the admin read it.
"""

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from django.utils import timezone

from .conf import outbox_settings
from .errors import Blame, Classified
from .logevents import log_event
from .models import WorkerHeartbeat

logger = logging.getLogger("outbox_worker.provider")

# Senders waiting on a probe ask again this often: resuming costs at most this.
PROBE_POLL_SECONDS = 0.5
# Messages remembered as refused during a pause; the oldest are forgotten first.
MAX_SUSPECTS = 1000


def outbox_worker_paused(*, worker_id: str, since: datetime | None, reason: str) -> None:
    """Record on `worker_id`'s heartbeat row that its delivery is paused (`since` None: running again)."""
    WorkerHeartbeat.objects.filter(worker_id=worker_id).update(paused_since=since, pause_reason=reason)


@dataclass(frozen=True)
class Admission:
    send: bool  # go ahead with the message in hand
    probe: bool  # this send tests a paused provider: report it with probe=True
    wait: float  # when not sending: seconds before asking again


@dataclass(frozen=True)
class _Suspect:
    code: int | None
    successes_then: int  # the gate's success count when this message was refused


class ProviderGate:
    """One worker process's view of whether the provider is taking mail; safe to share between threads.

    A sender's turn, in outline:

        admission = gate.admit()
        if not admission.send:
            ...  # hand the message back unsent, or wait admission.wait seconds and ask again
        result = deliver(message, ...)
        if result.sent:
            gate.record_success(message_id=message.pk)
        else:
            verdict = gate.record_failure(result.verdict, message_id=message.pk, probe=admission.probe)
            ...  # provider-level: back to the queue without spending an attempt, due in gate.retry_in()
    """

    def __init__(
        self,
        *,
        worker_id: str | None = None,
        backoff: tuple[float, float] | None = None,
        probe_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = timezone.now,
        jitter: Callable[[float, float], float] = random.uniform,
        persist: Callable[..., None] = outbox_worker_paused,
    ) -> None:
        self.worker_id = worker_id
        self.initial, self.maximum = backoff or outbox_settings.PAUSE_BACKOFF
        # A probe is one send with its reconnects, which the lease must cover too.
        self.probe_timeout = outbox_settings.LEASE_SECONDS if probe_timeout is None else probe_timeout
        # Test seams: a fake clock and jitter make the pause arithmetic exact without sleeping.
        self._clock, self._now, self._jitter, self._persist = clock, now, jitter, persist
        self._lock = threading.Lock()
        self.paused_since: datetime | None = None
        self.reason = ""
        self._paused_at = 0.0
        self._failures = 0  # provider-level failures this pause (the first plus failed probes)
        self._resume_at = 0.0
        self._probe_since: float | None = None
        self._successes = 0
        self._suspects: OrderedDict[int, _Suspect] = OrderedDict()
        # Changes are numbered under the lock and announced outside it; a late
        # announcement of an older change is skipped, so the row never goes stale.
        self._changes = 0
        self._announced = 0
        self._announce_lock = threading.Lock()

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def pause_for(self, failures: int) -> float:
        """Return the pause after the `failures`-th provider-level failure in a row: doubling, capped, jittered."""
        delay = min(self.maximum, self.initial * 2 ** (failures - 1))
        # Jitter keeps several worker processes from probing the provider in step.
        return delay * self._jitter(0.8, 1.0)

    def retry_in(self) -> float:
        """Return the seconds until the next probe may go (0 when delivery is not paused)."""
        with self._lock:
            return max(0.0, self._resume_at - self._clock()) if self.paused else 0.0

    def admit(self) -> Admission:
        """Say whether the caller may send now, whether it is the probe, and otherwise how long to wait."""
        with self._lock:
            if not self.paused:
                return Admission(send=True, probe=False, wait=0.0)
            now = self._clock()
            if self._probe_since is not None and now - self._probe_since < self.probe_timeout:
                return Admission(send=False, probe=False, wait=PROBE_POLL_SECONDS)
            if now < self._resume_at:
                return Admission(send=False, probe=False, wait=self._resume_at - now)
            self._probe_since = now
            return Admission(send=True, probe=True, wait=0.0)

    def record_success(self, *, message_id: int | None = None) -> None:
        """The provider accepted a message: resume delivery if it was paused."""
        with self._lock:
            self._successes += 1
            if message_id is not None:
                self._suspects.pop(message_id, None)
            change = self._resume()
        if change is not None:
            self._announce_resumed(*change)

    def record_failure(self, verdict: Classified, *, message_id: int | None = None, probe: bool = False) -> Classified:
        """Take a failed send into account; return the verdict the caller should act on.

        The returned verdict differs from `verdict` only when a provider-level
        refusal is charged to the message (see the module docstring).
        """
        if verdict.blame == Blame.MESSAGE:
            self._record_message_level(verdict, probe=probe)
            return verdict
        with self._lock:
            charged = self._charge_to_message(verdict, message_id)
            if charged is not None:
                if probe:
                    self._probe_since = None  # it told us nothing about the provider: let another probe now
                change = None
            else:
                change = self._pause(verdict, probe=probe)
        if charged is not None:
            log_event(
                logger, logging.WARNING, "outbox.refusal_charged_to_message",
                worker=self.worker_id, id=message_id, code=verdict.smtp_code, transient=charged.transient,
            )  # fmt: skip
            return charged
        if change is not None:
            self._announce_paused(*change)
        return verdict

    # --- internals (called with the lock held unless they announce) ---------

    def _record_message_level(self, verdict: Classified, *, probe: bool) -> None:
        if verdict.answered:
            # The provider took our connection and sender and answered about
            # this message (550 for its recipient, say): it is working.
            self.record_success()
        elif probe:
            # The message failed before reaching the provider (it could not be
            # built): no news about the provider, so let another sender probe.
            with self._lock:
                self._probe_since = None

    def _charge_to_message(self, verdict: Classified, message_id: int | None) -> Classified | None:
        if message_id is None or not verdict.may_be_about_this_message:
            return None
        suspect = self._suspects.pop(message_id, None)
        if suspect is not None and suspect.code == verdict.smtp_code and self._successes > suspect.successes_then:
            code = verdict.smtp_code or 0
            return replace(verdict, blame=Blame.MESSAGE, transient=not 500 <= code < 600)
        self._suspects[message_id] = _Suspect(verdict.smtp_code, self._successes)
        while len(self._suspects) > MAX_SUSPECTS:
            self._suspects.popitem(last=False)
        return None

    def _pause(self, verdict: Classified, *, probe: bool) -> tuple[int, datetime, str, float] | None:
        now = self._clock()
        if not self.paused:
            self.paused_since, self.reason = self._now(), verdict.description
            self._paused_at, self._failures = now, 1
        elif probe:
            self._failures += 1
            self._probe_since = None
            if verdict.description == self.reason:
                self._resume_at = now + self.pause_for(self._failures)
                return None
            self.reason = verdict.description
        else:
            return None  # a send that began before the pause: the same outage, not a new failure
        self._resume_at = now + self.pause_for(self._failures)
        self._changes += 1
        return self._changes, self.paused_since, self.reason, self._resume_at - now

    def _resume(self) -> tuple[int, float] | None:
        if not self.paused:
            return None
        paused_for = self._clock() - self._paused_at
        self.paused_since, self.reason = None, ""
        self._failures, self._probe_since = 0, None
        self._changes += 1
        return self._changes, paused_for

    def _announce_paused(self, change: int, since: datetime, reason: str, retry_in: float) -> None:
        with self._announce_lock:
            if change < self._announced:
                return
            self._announced = change
            log_event(
                logger, logging.WARNING, "outbox.delivery_paused",
                worker=self.worker_id, reason=reason, retry_in_s=round(retry_in, 1),
            )  # fmt: skip
            self._save(since, reason)

    def _announce_resumed(self, change: int, paused_for: float) -> None:
        with self._announce_lock:
            if change < self._announced:
                return
            self._announced = change
            log_event(
                logger,
                logging.INFO,
                "outbox.delivery_resumed",
                worker=self.worker_id,
                paused_for_s=round(paused_for, 1),
            )
            self._save(None, "")

    def _save(self, since: datetime | None, reason: str) -> None:
        if self.worker_id is None:
            return
        try:
            self._persist(worker_id=self.worker_id, since=since, reason=reason)
        except Exception as exc:  # noqa: BLE001 - showing the pause to operators must never stop delivery
            log_event(logger, logging.WARNING, "outbox.pause_not_recorded", worker=self.worker_id, error=repr(exc))
