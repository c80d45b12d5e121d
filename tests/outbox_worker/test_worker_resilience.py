"""Worker processes under stress: many at once, kill -9, slow sends, a lost database, NOTIFY."""

import signal
import threading
from collections import Counter

import pytest
from django.db import connection, transaction

from outbox_worker.models import OutboxMessage, OutboxStatus
from tests.factories import enqueue_messages
from tests.processes import listener_pids, start_worker, stop_worker, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_four_workers_deliver_2000_messages_exactly_once(smtp_server, tmp_path):
    messages = enqueue_messages(2000)
    smtp_server.handler.gate = threading.Event()
    workers = [
        start_worker("--batch-size", "25", smtp_port=smtp_server.port, log_path=tmp_path / f"w{i}.log")
        for i in range(4)
    ]
    try:
        smtp_server.handler.wait_at_gate(4)  # all four hold a batch at the same time
        smtp_server.handler.gate.set()
        smtp_server.handler.wait_for(2000, timeout=240)
    finally:
        smtp_server.handler.gate.set()
        codes = [stop_worker(w) for w in workers]

    assert codes == [0, 0, 0, 0]
    ids = Counter(smtp_server.handler.message_ids())
    assert set(ids) == {m.message_id for m in messages}
    assert max(ids.values()) == 1
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 2000


def test_kill_9_mid_batch_every_message_arrives_and_only_an_accepted_one_twice(smtp_server, tmp_path):
    messages = enqueue_messages(30)
    # The first email is accepted; the worker dies during the second, before it
    # has written the first one's outcome (outcomes are written every 10).
    smtp_server.handler.gate = threading.Event()
    smtp_server.handler.gate_skip = 1
    # One sender thread (the default is 4 on PostgreSQL), so "the first" and "the second" are in order.
    doomed = start_worker(
        "--batch-size", "30", "--lease-seconds", "2", "--concurrency", "1",
        smtp_port=smtp_server.port, log_path=tmp_path / "doomed.log",
        OUTBOX_FINISH_WITHIN="600",  # however slow this machine, the first outcome is still unwritten
    )  # fmt: skip
    survivor = None
    try:
        smtp_server.handler.wait_at_gate(1)
        assert smtp_server.handler.message_ids() == [messages[0].message_id]
        doomed.kill()
        assert doomed.wait(timeout=30) == -signal.SIGKILL
        # Its rows stay leased to a dead worker until the lease runs out.
        assert OutboxMessage.objects.filter(status=OutboxStatus.SENDING).count() == 30
        smtp_server.handler.gate.set()
        survivor = start_worker(
            "--poll-interval", "0.2", smtp_port=smtp_server.port, log_path=tmp_path / "survivor.log"
        )
        smtp_server.handler.wait_for_distinct(30, timeout=120)
    finally:
        smtp_server.handler.gate.set()
        if survivor is not None:
            assert stop_worker(survivor) == 0

    ids = Counter(smtp_server.handler.message_ids())
    assert set(ids) == {m.message_id for m in messages}
    duplicates = [message_id for message_id, n in ids.items() if n > 1]
    # Only the message the server had accepted from the killed worker went twice;
    # the one cut off mid-DATA was never accepted, so it arrives once.
    assert duplicates == [messages[0].message_id]
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 30
    assert OutboxMessage.objects.get(pk=messages[0].pk).attempts == 2


def test_a_send_slower_than_the_lease_keeps_its_row_and_is_sent_once(smtp_server, tmp_path):
    [message] = enqueue_messages(1)
    smtp_server.handler.gate = threading.Event()
    slow = start_worker("--lease-seconds", "1", smtp_port=smtp_server.port, log_path=tmp_path / "slow.log")
    other = None
    try:
        smtp_server.handler.wait_at_gate(1)
        first_lease = OutboxMessage.objects.get(pk=message.pk).locked_until
        other = start_worker("--poll-interval", "0.1", smtp_port=smtp_server.port, log_path=tmp_path / "other.log")
        # Three lease lengths pass while the send hangs; the lease keeper keeps moving the expiry.
        wait_until(
            lambda: (OutboxMessage.objects.get(pk=message.pk).locked_until - first_lease).total_seconds() >= 3,
            what="the lease to be extended three times over",
        )
        smtp_server.handler.gate.set()
        smtp_server.handler.wait_for(1)
        wait_until(lambda: OutboxMessage.objects.get(pk=message.pk).status == OutboxStatus.SENT, what="sent")
    finally:
        smtp_server.handler.gate.set()
        codes = [stop_worker(slow)] + ([stop_worker(other)] if other else [])

    assert codes == [0, 0]
    assert len(smtp_server.handler.received) == 1
    message.refresh_from_db()
    assert message.attempts == 1
    assert "lease_lost" not in (tmp_path / "slow.log").read_text()


def test_the_worker_survives_losing_its_database_connections(smtp_server, tmp_path):
    enqueue_messages(10)
    worker = start_worker("--poll-interval", "0.2", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")
    try:
        smtp_server.handler.wait_for(10)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.rowcount >= 1
        enqueue_messages(10, subject="depois")
        smtp_server.handler.wait_for(20)
        wait_until(lambda: OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 20, what="20 sent")
    finally:
        code = stop_worker(worker)

    assert code == 0
    assert worker.returncode == 0
    assert not OutboxMessage.objects.filter(status=OutboxStatus.FAILED).exists()


def test_notify_wakes_an_idle_worker_without_waiting_for_the_poll(smtp_server, tmp_path):
    worker = start_worker("--poll-interval", "3600", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")
    try:
        wait_until(lambda: listener_pids(worker.pid), what="the worker to LISTEN")
        with transaction.atomic():
            enqueue_messages(1)
        # With an hour-long poll interval only the notification can explain a delivery.
        smtp_server.handler.wait_for(1)
    finally:
        assert stop_worker(worker) == 0


def test_a_listen_connection_killed_by_the_server_is_reopened(smtp_server, tmp_path):
    worker = start_worker("--poll-interval", "3600", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")
    try:
        [first] = wait_until(lambda: listener_pids(worker.pid), what="the worker to LISTEN")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [first])
        wait_until(lambda: listener_pids(worker.pid) - {first}, what="a new LISTEN connection")
        enqueue_messages(1)
        smtp_server.handler.wait_for(1)
    finally:
        assert stop_worker(worker) == 0
    assert (tmp_path / "worker.log").read_text().count("outbox.listen_connected") == 2


def test_polling_alone_delivers_when_notifications_are_off(smtp_server, tmp_path):
    worker = start_worker(
        "--no-notify", "--poll-interval", "0.2", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log"
    )
    try:
        wait_until(lambda: "outbox.worker_started" in (tmp_path / "worker.log").read_text(), what="start-up")
        assert "notify=False" in (tmp_path / "worker.log").read_text()
        assert listener_pids(worker.pid) == set()
        enqueue_messages(3)
        smtp_server.handler.wait_for(3)
    finally:
        assert stop_worker(worker) == 0


def test_concurrency_sends_over_several_connections_at_once(smtp_server, tmp_path):
    messages = enqueue_messages(200)
    smtp_server.handler.gate = threading.Event()
    # A batch of 40 shared by 4 threads: 10 each, so all four are busy at once
    # (a thread claiming all 40 would leave the other three idle).
    worker = start_worker(
        "--concurrency", "4", "--batch-size", "40", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log"
    )
    try:
        smtp_server.handler.wait_at_gate(4)  # four sends in flight from one process
        assert OutboxMessage.objects.filter(status=OutboxStatus.SENDING).count() == 40
        smtp_server.handler.gate.set()
        smtp_server.handler.wait_for(200)
    finally:
        smtp_server.handler.gate.set()
        assert stop_worker(worker) == 0

    ids = Counter(smtp_server.handler.message_ids())
    assert set(ids) == {m.message_id for m in messages}
    assert max(ids.values()) == 1
