"""What a worker's sender threads share, so that they do not each ask the database the same question.

A NOTIFY wakes every sender of a worker at once (background.Waker). What
each would then ask the database (is anything due? may I hold the idle
lock?) one of them asks for all.
"""

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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
        # Held through a claim: a sender woken with the others waits for the first one's answer.
        self._claiming = threading.Lock()
        self._started = 0  # claims begun so far; the number of the latest
        self._last_empty = 0  # the highest number of a claim that came back empty

    @property
    def begun(self) -> int:
        """How many claims were begun (the worker logs it when it stops)."""
        with self._lock:
            return self._started

    def ticket(self) -> int:
        """What a sender takes when it decides to claim: the number of claims begun so far."""
        return self.begun

    def claim(self, ticket: int | None, make: Callable[[], list[T]]) -> list[T] | None:
        """Return `make()`'s rows, or None when a claim begun after `ticket` found nothing.

        Without a ticket (a must-claim, under the idle lock) the claim is always made.
        One claim at a time, so that senders woken together wait for the first answer.
        """
        with self._claiming:
            with self._lock:
                if ticket is not None and self._last_empty > ticket:
                    return None
                self._started += 1
                number = self._started
            rows = make()
            if not rows:
                with self._lock:
                    self._last_empty = number  # claims are made one at a time: numbers only grow
            return rows
