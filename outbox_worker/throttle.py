"""An optional cap on messages per second, for providers that throttle."""

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Spaces sends at least 1/rate seconds apart, across all sender threads."""

    def __init__(
        self,
        rate: float,
        *,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = 1.0 / rate
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._next = clock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)
