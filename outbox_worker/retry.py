"""The retry policy: how soon a failed delivery is tried again.

Two levels, and no sender ever sleeps on one message's behalf:
- inside one delivery, tenacity reconnects when the *provider* failed (a
  dropped or refused connection, TLS, a 421): at once, then after ~0.1 s and
  ~0.5 s, so a single dropped connection costs milliseconds. A message-level
  error (a greylisting 451, a 550) is never retried in-process: the message
  goes back to the queue and the sender moves on to the next one;
- back in the queue, a message-level transient failure is tried again once
  soon (FIRST_RETRY, ~0.5 s: most temporary replies that are not greylisting,
  such as "451 4.3.0 temporary failure", are gone by then), then waits
  `backoff(attempt)`, doubling each time from BACKOFF's base (greylisting
  servers want minutes), until the message's attempt budget is spent and it is
  marked failed. Provider-level failures spend no attempt: the provider gate
  (provider.py) pauses delivery instead.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from .conf import outbox_settings
from .errors import classify

# Each wait between reconnects is this many times the previous one (0.1 s, 0.5 s …).
RECONNECT_WAIT_GROWTH = 5


@dataclass(frozen=True)
class RetryPolicy:
    tries: int
    first_retry: float
    wait_initial: float
    wait_max: float
    backoff_base: float
    backoff_max: float

    @classmethod
    def from_settings(cls) -> "RetryPolicy":
        wait_initial, wait_max = outbox_settings.SEND_RETRY_WAIT
        backoff_base, backoff_max = outbox_settings.BACKOFF
        return cls(
            tries=outbox_settings.SEND_TRIES,
            first_retry=outbox_settings.FIRST_RETRY,
            wait_initial=wait_initial,
            wait_max=wait_max,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
        )

    def reconnect_wait(self, retry_state: RetryCallState) -> float:
        """Return the seconds to wait before the next try, after `retry_state.attempt_number` tries failed.

        None before the first reconnect (a server that dropped an idle
        connection takes a new one at once), then wait_initial growing five-fold
        up to wait_max, jittered down by up to 20 %.
        """
        failed = retry_state.attempt_number
        if failed <= 1:
            return 0.0
        delay = min(self.wait_max, self.wait_initial * RECONNECT_WAIT_GROWTH ** (failed - 2))
        return delay * random.uniform(0.8, 1.0)

    def retrying(self, *, sleep: Callable[[float], object], should_stop: Callable[[], bool]) -> Retrying:
        """Return a tenacity loop for one delivery's tries: retry provider-level errors only.

        `should_stop` ends the loop early when the worker is shutting down, so a
        stopping worker does not sit through more waits and tries.
        """
        return Retrying(
            stop=stop_after_attempt(self.tries) | (lambda _state: should_stop()),
            wait=self.reconnect_wait,
            retry=retry_if_exception(lambda exc: classify(exc).provider_level),
            sleep=sleep,
            reraise=True,
        )

    def backoff(self, attempt: int) -> timedelta:
        """Return how long to wait before delivery number `attempt + 1`.

        With FIRST_RETRY set: first_retry, then base, 2×base … up to the
        maximum; without it (0): base, 2×base … The quick retry costs an
        attempt, which is why the default budget is one higher than the
        greylisting schedule alone needs.
        """
        quick = self.first_retry > 0
        if quick and attempt <= 1:
            delay = self.first_retry
        else:
            doublings = max(0, attempt - (2 if quick else 1))  # the quick retry is not a step of the series
            delay = min(self.backoff_max, self.backoff_base * 2**doublings)
        # Jitter spreads out messages that failed together (one provider outage).
        return timedelta(seconds=delay * random.uniform(0.8, 1.0))
