"""The retry policy: how often and how soon a failed delivery is tried again.

Two levels:
- inside one delivery, tenacity retries a transient error a few times with a
  short jittered exponential wait (a greylisting 451 or a reset connection
  often clears in seconds);
- if the delivery still fails, the message goes back to the queue and its next
  attempt waits `backoff(attempt)`, doubling each time, until the message's
  attempt budget is spent and it is marked failed.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from .conf import outbox_settings
from .errors import classify


@dataclass(frozen=True)
class RetryPolicy:
    tries: int
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
            wait_initial=wait_initial,
            wait_max=wait_max,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
        )

    def retrying(self, *, sleep: Callable[[float], object], should_stop: Callable[[], bool]) -> Retrying:
        """Return a tenacity loop for one delivery's in-process tries.

        `should_stop` ends the loop early when the worker is shutting down, so a
        stopping worker does not sit through more waits and tries.
        """
        return Retrying(
            stop=stop_after_attempt(self.tries) | (lambda _state: should_stop()),
            wait=wait_exponential_jitter(multiplier=self.wait_initial, max=self.wait_max, jitter=self.wait_initial),
            retry=retry_if_exception(lambda exc: classify(exc).transient),
            sleep=sleep,
            reraise=True,
        )

    def backoff(self, attempt: int) -> timedelta:
        """Return how long to wait before delivery number `attempt + 1`."""
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempt - 1))
        # Jitter spreads out messages that failed together (one provider outage).
        return timedelta(seconds=delay * random.uniform(0.8, 1.0))
