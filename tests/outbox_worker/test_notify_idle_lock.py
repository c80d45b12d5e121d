"""The triggers NOTIFY only while some worker is idle, and an idle worker never sleeps past a committed row.

An idle sender holds advisory lock IDLE_LOCK_KEY (outbox_worker/idle.py
explains the protocol). These tests force each interleaving with real
connections: an enqueue's transaction held open in a thread, a second
connection standing in for another idle worker, and real worker processes.
Silence is proven without sleeping, as in test_notify_trigger.py: a marker
notification committed afterwards arrives after anything sent before it.
"""

import threading

import psycopg2
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from outbox_worker.background import CHANNEL
from outbox_worker.claim import outbox_claim_batch
from outbox_worker.idle import IDLE_LOCK_KEY, IdleLock, IdleSiblings, IdleState
from tests.factories import enqueue_messages
from tests.notifications import heard_before_marker, idle_lock_holders
from tests.outbox_worker import task_functions as tasks
from tests.processes import listener_pids, start_worker, stop_worker, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _connect():
    db = connection.settings_dict
    conn = psycopg2.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"], port=db["PORT"] or 5432
    )
    conn.autocommit = True
    return conn


@pytest.fixture
def listener():
    """A LISTEN connection that holds no lock: it hears, it does not make anyone notify."""
    conn = _connect()
    conn.cursor().execute(f"LISTEN {CHANNEL}")
    yield conn
    conn.close()


@pytest.fixture
def other_idle_worker():
    """A connection holding the idle lock, as a sleeping worker does."""
    conn = _connect()
    conn.cursor().execute("SELECT pg_advisory_lock(%s)", [IDLE_LOCK_KEY])
    yield conn
    conn.close()


@pytest.fixture
def idle_lock():
    lock = IdleLock()
    yield lock
    lock.release()


class OpenEnqueue(threading.Thread):
    """Enqueue `count` messages in a transaction that stays open until `commit` is set."""

    def __init__(self, count: int = 1) -> None:
        super().__init__(daemon=True)
        self.count = count
        self.inserted = threading.Event()
        self.commit = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                enqueue_messages(self.count)
                self.inserted.set()
                assert self.commit.wait(30), "the test never let the enqueue commit"
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc
            self.inserted.set()
        finally:
            connection.close()

    def finish(self) -> None:
        self.commit.set()
        self.join(30)
        assert self.error is None, self.error


def enqueue_elsewhere(count: int = 1) -> None:
    """Enqueue on another connection, as the web process does (a lock never conflicts with its own session)."""
    enqueue = OpenEnqueue(count)
    enqueue.start()
    enqueue.finish()


def test_with_no_idle_worker_enqueues_notify_nobody(listener):
    enqueue_messages(20)
    with transaction.atomic():
        tasks.add.enqueue(1, 2)

    assert heard_before_marker(listener) == []


def test_with_an_idle_worker_emails_and_tasks_notify(listener, other_idle_worker):
    enqueue_messages(1)
    assert heard_before_marker(listener) == [""]
    with transaction.atomic():
        tasks.add.enqueue(1, 2)
    assert heard_before_marker(listener) == [""]


def test_a_sender_cannot_take_the_lock_while_an_enqueue_is_in_flight_and_then_claims_its_row(listener, idle_lock):
    enqueue = OpenEnqueue()
    enqueue.start()
    try:
        assert enqueue.inserted.wait(30)
        # The enqueue holds the shared lock until it commits: sleeping now could miss its row.
        assert idle_lock.take() is IdleState.ENQUEUE_IN_FLIGHT
        assert not idle_lock.held
    finally:
        enqueue.finish()
    assert heard_before_marker(listener) == []  # nobody was idle: the enqueue notified nobody

    # Committed before the lock was taken, unannounced: the claim made under the lock sees it.
    assert idle_lock.take() is IdleState.HELD
    assert len(outbox_claim_batch(worker_id="w-test", limit=10, lease_seconds=60)) == 1


def test_an_enqueue_after_the_lock_is_taken_notifies(listener, idle_lock):
    assert idle_lock.take() is IdleState.HELD

    enqueue_elsewhere()

    assert heard_before_marker(listener) == [""]
    idle_lock.release()
    enqueue_elsewhere()
    assert heard_before_marker(listener) == []  # released while working: enqueues notify nobody again


def test_a_second_idle_sender_sees_the_holder_instead_of_an_enqueue(idle_lock, other_idle_worker):
    assert idle_lock.take() is IdleState.OTHER_IDLE
    assert not idle_lock.held

    other_idle_worker.close()  # that worker leaves: the next look takes over
    assert wait_until(lambda: idle_lock.take() is IdleState.HELD, what="the lock to be free")


def test_a_sender_that_stops_hands_the_lock_over_with_a_notification(listener, idle_lock):
    assert idle_lock.take() is IdleState.HELD

    idle_lock.release(hand_over=True)

    assert idle_lock_holders() == []
    assert heard_before_marker(listener) == [""]


def no_leftover_holder() -> None:
    """Wait out the backend of an earlier test's killed worker, which may still hold the lock for a moment."""
    wait_until(lambda: not idle_lock_holders(), what="no idle lock holder left from earlier tests")


def test_an_idle_worker_process_holds_the_lock_and_is_woken_by_an_enqueue(smtp_server, tmp_path):
    no_leftover_holder()
    worker = start_worker("--poll-interval", "3600", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")
    try:
        wait_until(lambda: listener_pids(worker.pid), what="the worker to LISTEN")
        wait_until(idle_lock_holders, what="the idle worker to hold the idle lock")
        enqueue_messages(1)
        # With an hour-long poll interval only the notification can explain a delivery.
        smtp_server.handler.wait_for(1)
    finally:
        assert stop_worker(worker) == 0
    wait_until(lambda: not idle_lock_holders(), what="the stopped worker to let the lock go")


def test_enqueues_while_the_only_worker_is_busy_do_not_notify(smtp_server, tmp_path, listener):
    no_leftover_holder()
    smtp_server.handler.gate = threading.Event()
    # One sender: with more, an idle one would (rightly) hold the lock while this one works.
    worker = start_worker(
        "--concurrency", "1", "--poll-interval", "3600", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log"
    )
    try:
        wait_until(idle_lock_holders, what="the idle worker to hold the idle lock")
        enqueue_messages(1)
        # The worker claimed it, gave the lock up before sending, and is now held mid-send.
        smtp_server.handler.wait_at_gate(1)
        assert idle_lock_holders() == []
        heard_before_marker(listener)  # forget the wake-up itself

        enqueue_messages(20)

        assert heard_before_marker(listener) == []
        smtp_server.handler.gate.set()
        # Busy workers claim again after each batch: no wake-up needed.
        smtp_server.handler.wait_for(21)
    finally:
        smtp_server.handler.gate.set()
        assert stop_worker(worker) == 0


def test_a_dead_database_connection_makes_the_sender_sleep_instead_of_crashing(idle_lock, other_idle_worker):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [pid] = cursor.fetchone()
    other_idle_worker.cursor().execute("SELECT pg_terminate_backend(%s, 10000)", [pid])  # waits until it is gone

    assert idle_lock.take() is IdleState.UNAVAILABLE
    assert not idle_lock.held
    assert idle_lock.take() is IdleState.OTHER_IDLE  # reconnected


def in_thread(action):
    """Run `action` on another thread (so with another database connection) and return what it returned."""
    result = {}

    def run():
        try:
            result["value"] = action()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert "value" in result, "the thread failed"
    return result["value"]


def test_a_sibling_sender_knows_the_holder_without_asking_the_database(idle_lock):
    idle_lock.siblings = siblings = IdleSiblings()
    assert idle_lock.take() is IdleState.HELD

    def sibling_takes():
        sibling = IdleLock(siblings)
        with CaptureQueriesContext(connection) as queries:
            state = sibling.take()
        return state, len(queries), sibling.held

    assert in_thread(sibling_takes) == (IdleState.OTHER_IDLE, 0, False)

    idle_lock.release()
    assert in_thread(lambda: IdleLock(siblings).take()) is IdleState.HELD  # the record was cleared


def test_asked_to_look_in_the_database_a_sibling_sees_that_the_holder_lost_the_lock_with_its_connection(idle_lock):
    idle_lock.siblings = siblings = IdleSiblings()
    assert idle_lock.take() is IdleState.HELD
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [holder_pid] = cursor.fetchone()
    killer = _connect()
    killer.cursor().execute("SELECT pg_terminate_backend(%s, 10000)", [holder_pid])  # waits until it is gone
    killer.close()

    def sibling_takes(ask_database):
        sibling = IdleLock(siblings)
        state = sibling.take(ask_database=ask_database)
        sibling.release()
        return state

    assert in_thread(lambda: sibling_takes(False)) is IdleState.OTHER_IDLE  # the record still names the holder
    assert in_thread(lambda: sibling_takes(True)) is IdleState.HELD
    connection.close()  # this thread's connection was terminated


def test_when_the_holders_connection_dies_a_sibling_thread_takes_over_and_enqueues_wake_it(smtp_server, tmp_path):
    no_leftover_holder()
    worker = start_worker(
        "--concurrency", "2", "--poll-interval", "3600", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log"
    )
    try:
        [holder] = wait_until(idle_lock_holders, what="an idle sender to hold the idle lock")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 10000)", [holder])
        # The holder sleeps for the hour-long poll interval; its sibling, told OTHER_IDLE by the record, looks
        # in the database when no notification came within OTHER_IDLE_RECHECK, and takes the lock.
        wait_until(lambda: [pid for pid in idle_lock_holders() if pid != holder], what="a sibling to take over")
        enqueue_messages(1)
        smtp_server.handler.wait_for(1)
    finally:
        assert stop_worker(worker) == 0
