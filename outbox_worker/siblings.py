"""What a worker's sender threads share, so that they do not each ask the database the same question.

A NOTIFY wakes every sender of a worker at once (background.Waker). What
each would then ask the database (is anything due? may I hold the idle
lock?) one of them asks for all.
"""

import threading


class SharedClaims:
    """Lets a sender skip a claim that a sibling sender started after it and that found nothing.

    A NOTIFY wakes every sender of the worker at once. Without this each of
    them would claim in turn, and all but the first would find nothing: eight
    empty claims per enrollment instead of one. A sender takes a `ticket()`
    when it decides to claim. A claim started after that ticket saw every row
    due at the ticket, so if it found nothing, claiming again would find only
    rows committed since, and those are covered by the idle lock's protocol
    (idle.py): the claim a sender makes once it holds the idle lock is
    never skipped, and from then on every enqueue notifies.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = 0  # claims begun so far; the number of the latest
        self._last_empty = 0  # the highest number of a claim that came back empty

    @property
    def begun(self) -> int:
        """How many claims were begun (the worker logs it when it stops)."""
        with self._lock:
            return self._started

    def ticket(self) -> int:
        with self._lock:
            return self._started

    def covered(self, ticket: int | None) -> bool:
        """Whether a claim begun after `ticket` came back empty (None: never; the caller must claim)."""
        if ticket is None:
            return False
        with self._lock:
            return self._last_empty > ticket

    def begin(self) -> int:
        with self._lock:
            self._started += 1
            return self._started

    def done(self, number: int, *, found: bool) -> None:
        if not found:
            with self._lock:
                self._last_empty = max(self._last_empty, number)
