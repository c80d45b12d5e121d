"""The worker's helper threads: waking senders on NOTIFY, and keeping the worker's promises.

Both run beside the sender loops and never send email themselves. Each uses
its own database connection, so a sender stuck in a slow SMTP conversation
cannot stop its heartbeat, its leases or its outcomes from being written,
and a notification is noticed while every sender is busy.

Who gets notified is decided by the idle lock (idle.py).
"""

import logging
import os
import select
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime

from django.db import DatabaseError, InterfaceError, connection

from .claim import TASKS
from .conf import outbox_settings
from .logevents import log_event
from .transitions import outbox_extend_leases, outbox_worker_gone, outbox_worker_seen

logger = logging.getLogger("outbox_worker.worker")

CHANNEL = "outbox_worker"


def listener_application_name(pid: int) -> str:
    """How a worker process's LISTEN connection names itself in pg_stat_activity."""
    return f"outbox_worker_listener:{pid}"


class Waker:
    """Lets idle senders sleep until a notification or the poll interval.

    A generation counter instead of a flag: a sender notes the generation
    before it claims, and if a notification arrives between its empty claim
    and its wait, the wait returns at once instead of missing it.
    """

    def __init__(self) -> None:
        # Re-entrant: shutdown() may run from a signal handler that interrupted
        # this very thread while it held the lock.
        self._condition = threading.Condition(threading.RLock())
        self.generation = 0

    def bump(self) -> None:
        with self._condition:
            self.generation += 1
            self._condition.notify_all()

    def wait(self, since: int, timeout: float) -> bool:
        """Sleep until the generation moves past `since`; return True if it did."""
        with self._condition:
            return self._condition.wait_for(lambda: self.generation != since, timeout=timeout)


class NotificationListener(threading.Thread):
    """LISTENs on its own connection and bumps the Waker on each notification.

    The connection can die without a word (a restarted server, a proxy's idle
    timeout), so it is pinged every `check_interval` seconds and reopened when
    anything is wrong. After a reconnect the senders are woken once, in case a
    notification was lost while the connection was down.

    It speaks whichever driver Django's PostgreSQL backend loaded (psycopg 3
    when installed, else psycopg2), reached through `connection.Database`, so
    the app imports neither and works with either.
    """

    def __init__(self, *, waker: Waker, stopping: threading.Event, check_interval: float = 30.0) -> None:
        super().__init__(name="outbox-listener", daemon=True)
        self.waker = waker
        self.stopping = stopping
        self.check_interval = check_interval
        self._stop_read, self._stop_write = os.pipe()
        self._connection = None  # a psycopg.Connection or a psycopg2 connection
        self._driver = connection.Database  # the module: psycopg or psycopg2

    @property
    def _psycopg3(self) -> bool:
        return self._driver.__name__ == "psycopg"

    def stop(self) -> None:
        os.write(self._stop_write, b"x")

    def _connect(self) -> None:
        params = connection.get_connection_params()
        # Django's cursor class and psycopg 3 type adapters serve its ORM; this connection only LISTENs.
        params.pop("cursor_factory", None)
        params.pop("context", None)
        # TCP keepalives make the kernel notice a silently dead peer too.
        params.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        # Lets an operator (and the tests) find this connection in pg_stat_activity.
        params["application_name"] = listener_application_name(os.getpid())
        conn = self._driver.connect(**params)
        conn.autocommit = True
        if self._psycopg3:
            # psycopg 3 reads notifications that arrive during a query (the ping) itself and hands them to
            # its handlers; psycopg2 keeps them in conn.notifies for the next _received_notification.
            conn.add_notify_handler(lambda _notification: self.waker.bump())
        with conn.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        self._connection = conn
        log_event(logger, logging.INFO, "outbox.listen_connected", channel=CHANNEL, backend_pid=conn.info.backend_pid,
                  driver=self._driver.__name__)  # fmt: skip

    def _disconnect(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except self._driver.Error:
                pass
            self._connection = None

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                if self._connection is None:
                    self._connect()
                    self.waker.bump()
                    failures = 0
                self._listen_once()
            except Exception as exc:  # noqa: BLE001 - a listener that dies would leave only polling
                delay = min(15.0, 0.5 * 2**failures)
                failures += 1
                log_event(logger, logging.ERROR, "outbox.listen_error", retry_in=delay, error=repr(exc))
                self._disconnect()
                self._wait_for_stop(delay)
        self._disconnect()

    def _wait_for_stop(self, seconds: float) -> None:
        select.select([self._stop_read], [], [], seconds)

    def _listen_once(self) -> None:
        assert self._connection is not None
        readable, _, _ = select.select([self._connection, self._stop_read], [], [], self.check_interval)
        if self._stop_read in readable:
            return
        if not readable:
            # Quiet for a while: make sure the connection is really alive.
            with self._connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return
        if self._received_notification():
            self.waker.bump()

    def _received_notification(self) -> bool:
        """Read what the server sent without blocking; return whether it held a notification.

        A closed connection raises here (both drivers), which reconnects.
        """
        if self._psycopg3:
            # libpq's own calls, as psycopg2's poll() makes them: read the socket, then pop notifications.
            pgconn = self._connection.pgconn
            pgconn.consume_input()
            received = False
            while pgconn.notifies() is not None:
                received = True
            return received
        self._connection.poll()
        if self._connection.notifies:
            self._connection.notifies.clear()
            return True
        return False


def sever(backend: object) -> bool:
    """Cut an email backend's connection under a sender blocked on it; return whether there was one to cut.

    Shutting the socket down (not just closing it) makes a read blocked in
    another thread return at once, so the sender gets an error and moves on.
    Works for Django's SMTP backend; an HTTP backend is bounded by its own
    timeout, and its row by the lease, which is no longer extended.
    """
    sock = getattr(getattr(backend, "connection", None), "sock", None)
    if sock is None:
        return False
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing left to unblock
    return True


class SendDeadline:
    """The hard bound on one send (OUTBOX_SEND_DEADLINE), policed by the keeper thread.

    Senders register each send; past the deadline the keeper marks it overdue
    (its lease is no longer extended) and cuts its connection so the sender,
    blocked on a drip-feeding server, gets an error and moves on.
    """

    def __init__(self, *, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._sends: dict[int, tuple[int, float, object]] = {}  # by thread: message id, start, backend
        self._overdue: set[int] = set()

    def begin(self, message_id: int, backend: object) -> float:
        started = time.monotonic()
        with self._lock:
            self._sends[threading.get_ident()] = (message_id, started, backend)
        return started

    def end(self, message_id: int) -> bool:
        """Close the current thread's send; return whether it had passed the deadline."""
        with self._lock:
            self._sends.pop(threading.get_ident(), None)
            if message_id in self._overdue:
                self._overdue.discard(message_id)
                return True
            return False

    def is_overdue(self, message_id: int) -> bool:
        with self._lock:
            return message_id in self._overdue

    def overdue_ids(self) -> set[int]:
        with self._lock:
            return set(self._overdue)

    def enforce(self) -> None:
        """Abandon every send older than the deadline: stop its lease, cut its connection."""
        now = time.monotonic()
        with self._lock:
            overdue = [
                (message_id, backend)
                for message_id, started, backend in self._sends.values()
                if now - started > self.seconds and message_id not in self._overdue
            ]
            self._overdue.update(message_id for message_id, _backend in overdue)
        for message_id, backend in overdue:
            cut = sever(backend)
            log_event(logger, logging.WARNING, "outbox.send_deadline", id=message_id, deadline_s=self.seconds,
                      connection_cut=cut)  # fmt: skip


class Keeper(threading.Thread):
    """Keeps the worker's promises while its senders are busy.

    Every tick: abandon sends older than the send deadline; write outcomes
    that waited FINISH_WITHIN seconds; every HEARTBEAT_SECONDS record that
    the worker is alive; every `lease_seconds / 3` extend the leases of the
    rows the senders still work on. Only rows in hand are extended: a row
    whose outcome could not be written, or whose send passed the deadline, is
    left to its lease. On its own database connection, so a sender stuck in a
    slow SMTP conversation stops none of it.

    With `use_database` off (the worker runs inside its caller's transaction,
    which other connections cannot see) it only polices the deadline.
    """

    TICK = 0.1

    def __init__(
        self,
        *,
        worker_id: str,
        lease_seconds: float,
        stopping: threading.Event,
        lease_ids: Callable[[], list[int]],
        flush_due: Callable[[], None],
        enforce_deadline: Callable[[], None],
        pause_state: Callable[[], tuple[datetime | None, str]],
        use_database: bool = True,
        task_lease_ids: Callable[[], list[int]] | None = None,
    ) -> None:
        # `stopping` is set only once every sender has finished: during a
        # graceful shutdown the message in hand still needs its lease.
        super().__init__(name="outbox-keeper", daemon=True)
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.stopping = stopping
        self.lease_ids = lease_ids
        self.flush_due = flush_due
        self.enforce_deadline = enforce_deadline
        self.pause_state = pause_state
        self.use_database = use_database
        self.task_lease_ids = task_lease_ids
        self.heartbeat_seconds = min(outbox_settings.HEARTBEAT_SECONDS, lease_seconds / 3)
        self.first_beat = threading.Event()

    def beat(self) -> None:
        # The provider gate's pause rides along, so the heartbeat row always
        # shows it even if the gate's own write of it failed.
        paused_since, pause_reason = self.pause_state()
        outbox_worker_seen(
            worker_id=self.worker_id, hostname=socket.gethostname(), pid=os.getpid(),
            paused_since=paused_since, pause_reason=pause_reason,
        )  # fmt: skip
        self.first_beat.set()

    def gone(self) -> None:
        try:
            outbox_worker_gone(worker_id=self.worker_id)
        except (DatabaseError, InterfaceError):
            pass  # the row goes stale instead, with the same meaning

    def extend(self) -> int:
        extended = 0
        if ids := self.lease_ids():
            extended += outbox_extend_leases(
                message_ids=ids, worker_id=self.worker_id, lease_seconds=self.lease_seconds
            )
        # A running task is kept for as long as it runs: Python cannot cut a
        # thread short, so there is no deadline to enforce on it.
        if self.task_lease_ids is not None and (ids := self.task_lease_ids()):
            extended += outbox_extend_leases(
                message_ids=ids, worker_id=self.worker_id, lease_seconds=self.lease_seconds, queue=TASKS
            )
        return extended

    def _step(self, name: str, action: Callable[[], object]) -> None:
        try:
            action()
        except (DatabaseError, InterfaceError) as exc:
            log_event(logger, logging.ERROR, "outbox.keeper_error", worker=self.worker_id, step=name, error=repr(exc))
            connection.close()
        except Exception as exc:  # noqa: BLE001 - the keeper must outlive any one failure
            log_event(logger, logging.ERROR, "outbox.keeper_error", worker=self.worker_id, step=name, error=repr(exc),
                      traceback=traceback.format_exc())  # fmt: skip

    def run(self) -> None:
        next_beat = next_extend = time.monotonic()  # announce the worker at once
        try:
            while True:
                self._step("deadline", self.enforce_deadline)
                if self.use_database:
                    now = time.monotonic()
                    if now >= next_beat:
                        next_beat = now + self.heartbeat_seconds
                        self._step("heartbeat", self.beat)
                    if now >= next_extend:
                        next_extend = now + self.lease_seconds / 3
                        self._step("extend", self.extend)
                    self._step("flush", self.flush_due)
                if self.stopping.wait(self.TICK):
                    break
            if self.use_database:
                self.gone()
        finally:
            if self.use_database:
                connection.close()
