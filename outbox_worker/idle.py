"""Who gets notified: the idle lock (migrations 0013 and 0016).

`pg_notify` takes a database-wide lock held through the commit's WAL flush:
concurrent enqueues that all NOTIFY commit one after another. So the triggers
NOTIFY only when some sender is idle, asking the database instead of guessing:
an idle sender holds advisory lock IDLE_LOCK_KEY exclusively (session level)
while it sleeps, and the triggers' WHEN clause calls
`pg_try_advisory_xact_lock_shared` on the same key: the trigger runs (and
NOTIFYs) only when that *fails*. Concurrent enqueues take the shared lock
together (no contention) and notify nobody while every sender is busy; a busy
sender claims again at once after a non-empty batch anyway.

Why no row is left asleep (a sender going idle, `IdleLock.rest`):
1. It claims and finds nothing, then tries the lock exclusively
   (`pg_try_advisory_lock`). If that fails and no *exclusive* holder shows in
   `pg_locks`, an enqueue holds the shared lock until its commit: the sender
   waits a moment and claims again instead of sleeping (ENQUEUE_IN_FLIGHT).
2. With the lock held it claims once more before sleeping: a row committed
   before the lock was taken (which notified nobody) is seen by that claim,
   which is never skipped (siblings.SharedClaims); any enqueue after it fails
   the shared try-lock and NOTIFYs.
3. It sleeps on the Waker until a notification or the poll interval.
4. It releases the lock when it wakes, before it claims: a working sender
   never makes enqueues pay for NOTIFY.
Several idle senders (threads or processes): only one holds the key. Another
that fails to take it and sees an exclusive holder in `pg_locks` sleeps
(OTHER_IDLE): while that holder holds the key every enqueue NOTIFYs, and NOTIFY
is broadcast to every listener, so it is woken too. A sender whose sibling
thread holds the key knows it without asking (IdleSiblings): one database
question per wake-up instead of one per sender. The holder gives the key up
only (a) when it wakes on a NOTIFY, which woke everyone; (b) at its poll
interval, after which it either takes the key again before sleeping (steps
1–2 cover the gap) or goes to work and claims the rows the gap let through;
(c) at shutdown, when it NOTIFYs so that the others take over; (d) when the
backlog paces claims (a trickle, backlog.paced_until): it claims again within
OUTBOX_CLAIM_HOLD_OFF, and that claim finds what the gap let through; (e) when it
dies or its connection does: then enqueues notify nobody until a sleeper looks
again, so OTHER_IDLE sleepers look at most every OTHER_IDLE_RECHECK seconds,
and that look asks the database, not the sibling record. A lost wake-up only
ever costs latency: polling always finds the row.
"""

import enum
import logging
import threading

from django.db import DatabaseError, InterfaceError, connection

from .background import CHANNEL, Waker
from .logevents import log_event

logger = logging.getLogger("outbox_worker.worker")

# The advisory lock an idle sender holds; migration 0016's triggers test the same number.
IDLE_LOCK_KEY = 7_361_000_013
# How often a sender that sleeps while another holds the idle lock looks again, in case that one died.
OTHER_IDLE_RECHECK = 5.0
# How long a sender waits for an enqueue in flight (holding the shared lock) to commit before claiming again.
ENQUEUE_IN_FLIGHT_RETRY = 0.02


class IdleState(enum.Enum):
    HELD = "held"  # this sender holds the idle lock: enqueues from now on NOTIFY
    OTHER_IDLE = "other_idle"  # another idle sender holds it: enqueues NOTIFY, which wakes everyone
    ENQUEUE_IN_FLIGHT = "enqueue_in_flight"  # an enqueue holds it shared until commit: claim again shortly
    UNAVAILABLE = "unavailable"  # the database did not answer: sleep the poll interval, as without NOTIFY


class IdleSiblings:
    """Which of one worker's IdleLocks holds the lock, so that its siblings need not ask the database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: IdleLock | None = None

    def held_by_other_than(self, lock: "IdleLock") -> bool:
        with self._lock:
            return self._holder is not None and self._holder is not lock

    def set(self, lock: "IdleLock") -> None:
        with self._lock:
            self._holder = lock

    def clear(self, lock: "IdleLock") -> None:
        with self._lock:
            if self._holder is lock:
                self._holder = None


class IdleLock:
    """The idle lock of one sender, on that sender's own database connection (see the module docstring)."""

    def __init__(self, siblings: IdleSiblings | None = None) -> None:
        self.held = False
        self.siblings = siblings
        # Set when this sender slept OTHER_IDLE and heard nothing: the next take() asks the database.
        self._ask_database = False

    def rest(self, waker: Waker, since: int, timeout: float, *, stopping: threading.Event) -> None:
        """One idle turn of a sender that found nothing: steps 1-4 of the module docstring.

        Returns at once when the sender must claim again before sleeping (it
        has just taken the lock, or an enqueue is in flight); else sleeps until
        a notification (past `since`), `timeout` or shutdown, and gives the lock up.
        """
        other_idle = False
        if not self.held:
            state = self.take(ask_database=self._ask_database)
            self._ask_database = False
            if state is IdleState.HELD:
                return  # claim once more: a row committed before the lock notified nobody
            if state is IdleState.ENQUEUE_IN_FLIGHT:
                stopping.wait(ENQUEUE_IN_FLIGHT_RETRY)
                return  # its row is visible once it commits
            if state is IdleState.OTHER_IDLE:
                timeout = min(timeout, OTHER_IDLE_RECHECK)  # in case the holder died
                other_idle = True
        woken = waker.wait(since, timeout)
        # No notification for that long while another held the lock: it may be gone with its
        # connection, which the siblings' record would not show.
        self._ask_database = other_idle and not woken
        self.release(hand_over=stopping.is_set())

    def take(self, *, ask_database: bool = False) -> IdleState:
        """Try to become the idle sender; `ask_database` ignores what the siblings record says."""
        if not ask_database and self.siblings is not None and self.siblings.held_by_other_than(self):
            return IdleState.OTHER_IDLE
        try:
            return self._try_take()
        except (DatabaseError, InterfaceError) as exc:
            log_event(logger, logging.WARNING, "outbox.idle_lock_error", error=repr(exc))
            connection.close()  # the next claim reconnects (and reports a lasting outage itself)
            return IdleState.UNAVAILABLE

    def _try_take(self) -> IdleState:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [IDLE_LOCK_KEY])
            if cursor.fetchone()[0]:
                self.held = True
                if self.siblings is not None:
                    self.siblings.set(self)
                return IdleState.HELD
            # A bigint key shows in pg_locks as classid (high 32 bits), objid (low 32 bits), objsubid 1.
            cursor.execute(
                """
                SELECT EXISTS (
                    SELECT 1 FROM pg_locks
                    WHERE locktype = 'advisory' AND objsubid = 1 AND classid = %s AND objid = %s
                      AND mode = 'ExclusiveLock' AND granted
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                )
                """,
                [IDLE_LOCK_KEY >> 32, IDLE_LOCK_KEY & 0xFFFFFFFF],
            )
            return IdleState.OTHER_IDLE if cursor.fetchone()[0] else IdleState.ENQUEUE_IN_FLIGHT

    def release(self, *, hand_over: bool = False) -> None:
        """Give the lock up; with `hand_over` (this sender stops) NOTIFY so another idle sender takes it."""
        if not self.held:
            return
        self.held = False
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [IDLE_LOCK_KEY])
                if hand_over:
                    cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])
        except (DatabaseError, InterfaceError):
            connection.close()  # a session lock ends with its connection
        finally:
            # After the unlock: a sibling looking meanwhile is told OTHER_IDLE without a query, which is
            # what the database would answer. This sender is awake and takes the key again before it sleeps.
            if self.siblings is not None:
                self.siblings.clear(self)
