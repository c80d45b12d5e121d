"""The worker's backlog: one claim for the whole process, shared out to its sender threads.

One claim of OUTBOX_BATCH_SIZE rows feeds every sender; each takes a small
group at a time (its share of the claim, at most OUTBOX_FINISH_EVERY, a
suspect alone) to mark started and send. Before, each thread claimed its own
fixed share up front: four times the claims (each with its suppression
lookup), and a thread could sit on its share while another stood idle.

Rows waiting here are claimed but not started, so nothing has been charged
for them: if the process dies they come back uncharged once its heartbeat
goes stale (`started_at` is still NULL, so no interruption is counted either),
and a worker that stops, or that the provider gate pauses, hands them back at
once (`take_all`). The keeper extends their leases meanwhile (`OutcomeBook.hold`).
"""

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from .models import OutboxMessage
from .outcomes import OutcomeBook
from .siblings import SharedClaims


class Backlog:
    def __init__(
        self,
        *,
        claim: Callable[..., list[OutboxMessage]],
        batch_size: int,
        group_size: int,
        senders: int,
        book: OutcomeBook,
        hold_off: float = 0.0,
    ) -> None:
        """`claim(limit=n)` leases up to `limit` due rows to this worker and returns them, oldest due first.

        `hold_off`: after a claim that found some rows but not a full batch,
        the next claim waits this many seconds (`paced_until`), so that a
        trickle of enqueues is claimed in batches instead of one row at a time.
        """
        self._claim = claim
        self.hold_off = hold_off
        self._trickle_at: float | None = None  # time.monotonic() of the last short, non-empty claim
        self.batch_size = batch_size
        self.group_size = group_size
        self.senders = senders
        self._book = book
        # Held through a claim too: a sender finding the backlog empty while
        # another is claiming waits for that claim instead of making its own.
        self._lock = threading.Lock()
        self._rows: deque[OutboxMessage] = deque()
        self._share = group_size
        self.claims = SharedClaims()

    def paced_until(self) -> float:
        """The time.monotonic() before which no claim is made without a must-claim (0: claim at will).

        Set by a claim that found rows but fewer than it asked for: the queue
        was drained, and what comes next trickles in. Claiming again at once
        would take one row per claim (a claim, a mark and an outcome per
        email); waiting `hold_off` takes every row enqueued meanwhile together.
        An empty claim ends the pacing: the senders go idle and a NOTIFY wakes
        them at once (idle.py). A full claim ends it too: there is a backlog.
        """
        trickle_at = self._trickle_at
        return 0.0 if trickle_at is None else trickle_at + self.hold_off

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def take(
        self, *, on_claim: Callable[[], None] | None = None, probe: bool = False, ticket: int | None = None
    ) -> list[OutboxMessage]:
        """Return the next group to send, claiming a batch first when none is waiting ([] when nothing is due).

        `on_claim` runs after a claim that found rows, before they are shared
        out. With `probe`, claim one message for the provider gate's probe
        instead, past the backlog (which a pause has emptied). With a `ticket`
        (`claims.ticket()`), no claim is made if one begun after it found
        nothing (siblings.SharedClaims) or while `paced_until` is ahead;
        without (a must-claim), the backlog claims whenever it is empty.
        """
        if probe:
            return self._claimed(1, on_claim)
        with self._lock:
            if not self._rows:
                if ticket is not None and time.monotonic() < self.paced_until():
                    return []
                # At least one per sender, as when each thread claimed its own share.
                limit = max(self.batch_size, self.senders)
                claimed = self._claimed(limit, on_claim, ticket)
                if claimed is None:  # a sibling's claim, begun after the ticket, found nothing
                    return []
                short = 0 < len(claimed) < limit
                self._trickle_at = time.monotonic() if short and self.hold_off > 0 else None
                if not claimed:
                    return []
                self._rows.extend(claimed)
                # Every sender gets a part of a short batch, instead of the first
                # ones taking whole groups while the others find nothing.
                self._share = min(self.group_size, max(1, math.ceil(len(claimed) / self.senders)))
            return self._next_group()

    def _claimed(
        self, limit: int, on_claim: Callable[[], None] | None, ticket: int | None = None
    ) -> list[OutboxMessage] | None:
        claimed = self.claims.claim(ticket, lambda: self._claim(limit=limit))
        # Leased rows are in hand at once: the keeper extends their leases from here on.
        if claimed:
            self._book.hold(message.pk for message in claimed)
            if on_claim is not None:
                on_claim()
        return claimed

    def _next_group(self) -> list[OutboxMessage]:
        # A message that was in flight when a worker died (a suspect) is marked
        # and sent alone: if it kills this worker too, it is the only one
        # charged, and the only one failed after the second time.
        if self._rows[0].interruptions:
            return [self._rows.popleft()]
        group: list[OutboxMessage] = []
        while self._rows and len(group) < self._share and not self._rows[0].interruptions:
            group.append(self._rows.popleft())
        return group

    def take_all(self) -> list[OutboxMessage]:
        """Empty the backlog and return its rows: the caller hands them back."""
        with self._lock:
            rows = list(self._rows)
            self._rows.clear()
        return rows
