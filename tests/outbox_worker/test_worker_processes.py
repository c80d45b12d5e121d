"""The real `manage.py outbox_worker` command, as separate processes, on PostgreSQL."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from outbox_worker.models import OutboxMessage, OutboxStatus, WorkerHeartbeat
from tests.factories import enqueue_messages
from tests.processes import sigterm_during_first_send, start_worker, stop_worker

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_two_workers_drain_500_messages_each_delivered_exactly_once(smtp_server, tmp_path):
    messages = enqueue_messages(500)
    # Hold the first send of each worker until both are mid-batch, so both
    # really work the table at the same time however their start-ups differ.
    smtp_server.handler.gate = threading.Event()
    workers = [
        start_worker(
            "--batch-size",
            "20",
            "--poll-interval",
            "0.2",
            smtp_port=smtp_server.port,
            log_path=tmp_path / f"worker{i}.log",
        )
        for i in range(2)
    ]
    try:
        smtp_server.handler.wait_at_gate(2)
        smtp_server.handler.gate.set()
        received = smtp_server.handler.wait_for(500, timeout=120)
    finally:
        smtp_server.handler.gate.set()
        codes = [stop_worker(w) for w in workers]

    assert codes == [0, 0]
    ids = Counter(r.message["Message-ID"] for r in received)
    assert len(received) == 500
    assert set(ids) == {m.message_id for m in messages}
    assert max(ids.values()) == 1
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 500
    # Both processes took part: SKIP LOCKED shared the work instead of serialising it.
    workers_seen = set(OutboxMessage.objects.values_list("delivery_attempts__worker", flat=True))
    assert len(workers_seen) == 2


def test_a_message_held_by_a_dead_worker_is_delivered_once_its_lease_expires(smtp_server, tmp_path):
    [message] = enqueue_messages(1)
    OutboxMessage.objects.filter(pk=message.pk).update(
        status=OutboxStatus.SENDING,
        locked_by="dead-host:1234:abc",
        locked_until=timezone.now() - timedelta(seconds=1),
        attempts=1,
    )

    worker = start_worker("--once", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")
    assert worker.wait(timeout=60) == 0

    [received] = smtp_server.handler.received
    assert received.message["Message-ID"] == message.message_id
    message.refresh_from_db()
    assert (message.status, message.attempts, message.locked_by) == (OutboxStatus.SENT, 2, "")


def test_sigterm_during_a_batch_finishes_the_message_in_hand_and_releases_the_rest(smtp_server, tmp_path):
    smtp_server.handler.gate = threading.Event()
    enqueue_messages(5)
    # One sender thread (the default is 8 on PostgreSQL): exactly one message is in hand.
    worker = start_worker(
        "--batch-size", "5", "--concurrency", "1", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log"
    )
    code = sigterm_during_first_send(smtp_server, worker, rows_held=5)

    assert code == 0
    assert len(smtp_server.handler.received) == 1
    statuses = Counter(OutboxMessage.objects.values_list("status", flat=True))
    assert statuses == {OutboxStatus.SENT: 1, OutboxStatus.PENDING: 4}
    # Released rows are due at once and their unstarted claim is not counted.
    assert set(OutboxMessage.objects.filter(status=OutboxStatus.PENDING).values_list("attempts", "locked_by")) == {
        (0, "")
    }
    assert "outbox.released" in (tmp_path / "worker.log").read_text()
    # Not alive at once (not left to go stale), and kept as "stopped" for operators.
    assert not WorkerHeartbeat.objects.alive().exists()
    assert WorkerHeartbeat.objects.stopped().count() == WorkerHeartbeat.objects.count() > 0


def test_the_worker_leaves_commit_durability_and_connection_hooks_as_it_found_them(smtp_server, smtp_backend_factory):
    """Enqueues made after an inline run (call_command, a test) must stay durable."""
    from django.db import connection
    from django.db.backends.signals import connection_created

    from outbox_worker.worker import OutboxWorker

    def setting():
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    receivers = list(connection_created.receivers)
    enqueue_messages(1)
    OutboxWorker(once=True, poll_interval=0, connection_factory=smtp_backend_factory).run()
    assert len(smtp_server.handler.received) == 1

    assert setting() == "on"  # the connection the worker used
    connection.close()
    assert setting() == "on"  # and a new one
    assert connection_created.receivers == receivers


def test_an_idle_worker_wakes_for_the_quick_retry_it_scheduled(smtp_server, tmp_path):
    # Nothing notifies about a row due in the future, and this worker would
    # poll only after an hour: the retry it scheduled itself must wake it.
    smtp_server.handler.replies.append("451 4.3.0 Temporary failure")
    [message] = enqueue_messages(1)
    worker = start_worker(
        "--poll-interval", "3600", "--no-notify", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log",
        OUTBOX_FIRST_RETRY="0.5",
    )  # fmt: skip
    try:
        [received] = smtp_server.handler.wait_for(1, timeout=60)
    finally:
        assert stop_worker(worker) == 0
    assert received.message["Message-ID"] == message.message_id
    message.refresh_from_db()
    assert (message.status, message.attempts) == (OutboxStatus.SENT, 2)
