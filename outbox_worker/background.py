"""The worker's helper threads: waking senders on NOTIFY, and keeping leases alive.

Both run beside the sender loops and never send email themselves. Each uses
its own database connection, so a sender stuck in a slow SMTP conversation
cannot stop its lease from being extended, and a notification is noticed
while every sender is busy.
"""

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable

import psycopg2
from django.db import DatabaseError, InterfaceError, connection
from django.utils import timezone

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
    """

    def __init__(self, *, waker: Waker, stopping: threading.Event, check_interval: float = 30.0) -> None:
        super().__init__(name="outbox-listener", daemon=True)
        self.waker = waker
        self.stopping = stopping
        self.check_interval = check_interval
        self._stop_read, self._stop_write = os.pipe()
        self._connection: psycopg2.extensions.connection | None = None

    def stop(self) -> None:
        os.write(self._stop_write, b"x")

    def _connect(self) -> None:
        params = connection.get_connection_params()
        # TCP keepalives make the kernel notice a silently dead peer too.
        params.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        # Lets an operator (and the tests) find this connection in pg_stat_activity.
        params["application_name"] = listener_application_name(os.getpid())
        conn = psycopg2.connect(**params)
        conn.set_session(autocommit=True)
        with conn.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        self._connection = conn
        logger.info("outbox.listen_connected channel=%s backend_pid=%s", CHANNEL, conn.get_backend_pid())

    def _disconnect(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except psycopg2.Error:
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
                logger.error("outbox.listen_error retry_in=%.1fs error=%r", delay, exc)
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
        self._connection.poll()
        if self._connection.notifies:
            self._connection.notifies.clear()
            self.waker.bump()


class LeaseKeeper(threading.Thread):
    """Extends the lease of the rows the senders have in hand, every `lease_seconds / 3`.

    Without it a send slower than the lease (a provider taking minutes) would
    let a second worker take the row and send it again. Only rows a sender
    still works on are extended: a row whose outcome could not be written
    (database trouble) is dropped from `in_hand`, so its lease runs out and it
    comes back instead of staying ours forever.
    """

    def __init__(
        self,
        *,
        worker_id: str,
        lease_seconds: float,
        stopping: threading.Event,
        in_hand: Callable[[], list[int]],
    ) -> None:
        # `stopping` is set only once every sender has finished: during a
        # graceful shutdown the message in hand still needs its lease.
        super().__init__(name="outbox-lease-keeper", daemon=True)
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.stopping = stopping
        self.in_hand = in_hand
        self.started_at = timezone.now()

    def extend(self) -> int:
        now = timezone.now()
        outbox_worker_seen(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            now=now,
        )
        ids = self.in_hand()
        if not ids:
            return 0
        return outbox_extend_leases(
            message_ids=ids, worker_id=self.worker_id, now=now, lease_seconds=self.lease_seconds
        )

    def run(self) -> None:
        interval = self.lease_seconds / 3
        next_run = time.monotonic()  # announce the worker at once, then every interval
        try:
            while not self.stopping.wait(max(0.0, next_run - time.monotonic())):
                next_run = time.monotonic() + interval
                try:
                    extended = self.extend()
                    if extended:
                        logger.debug("outbox.lease_extended worker=%s rows=%s", self.worker_id, extended)
                except (DatabaseError, InterfaceError) as exc:
                    logger.error("outbox.lease_extend_failed worker=%s error=%r", self.worker_id, exc)
                    connection.close()
            try:
                outbox_worker_gone(worker_id=self.worker_id)
            except (DatabaseError, InterfaceError):
                pass  # the row goes stale instead; nothing depends on its removal
        finally:
            connection.close()
