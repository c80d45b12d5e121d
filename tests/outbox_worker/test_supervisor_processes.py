"""`manage.py outbox_worker --processes N` as real processes: the parent, its children, signals and kill -9."""

import os
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest

from outbox_worker.models import OutboxMessage, OutboxStatus, WorkerHeartbeat
from outbox_worker.selectors import outbox_dashboard, outbox_health
from tests.factories import enqueue_messages
from tests.processes import live_worker_pids, start_worker, stop_worker, wait_for_live_workers, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def process_gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


# Sends wait at the SMTP server's gate while a test acts; the tests' usual 5 s timeout could end them first.
PATIENT_CLIENT = {"TEST_EMAIL_TIMEOUT": "120"}


def log_count(log_path: Path, event: str) -> int:
    return log_path.read_text().count(event) if log_path.exists() else 0


def test_once_with_two_processes_drains_every_email_once_through_two_workers(smtp_server, tmp_path):
    messages = enqueue_messages(200)
    # One sender per child, each held at its first send until both are there: both really take part.
    smtp_server.handler.gate = threading.Event()
    parent = start_worker(
        "--once", "--processes", "2", "--concurrency", "1", "--batch-size", "20",
        smtp_port=smtp_server.port, log_path=tmp_path / "worker.log", **PATIENT_CLIENT,
    )  # fmt: skip
    try:
        smtp_server.handler.wait_at_gate(2)
        # Two children are two workers to the status command and the admin, as two replicas would be.
        workers = outbox_health().workers
        assert len(workers) == 2
        assert {w["pid"] for w in workers}.isdisjoint({parent.pid})
        assert len(outbox_dashboard().live_workers) == 2
        smtp_server.handler.gate.set()
        code = parent.wait(timeout=120)
    finally:
        smtp_server.handler.gate.set()
        stop_worker(parent)

    assert code == 0
    ids = Counter(smtp_server.handler.message_ids())
    assert set(ids) == {m.message_id for m in messages}
    assert max(ids.values()) == 1
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 200
    assert len(set(OutboxMessage.objects.values_list("delivery_attempts__worker", flat=True))) == 2


def test_sigterm_to_the_parent_mid_drain_stops_every_child_gracefully(smtp_server, tmp_path):
    enqueue_messages(40)
    smtp_server.handler.gate = threading.Event()  # a slow server: every send waits until we let it go
    log = tmp_path / "worker.log"
    parent = start_worker(
        "--processes", "2", "--concurrency", "2", "--batch-size", "10", smtp_port=smtp_server.port, log_path=log,
        **PATIENT_CLIENT,
    )  # fmt: skip
    try:
        smtp_server.handler.wait_at_gate(4)  # two senders in each child hold a message
        children = wait_for_live_workers(2)
        parent.send_signal(signal.SIGTERM)
        wait_until(lambda: log_count(log, "outbox.worker_stopping") == 2, what="both children to get the signal")
        assert parent.poll() is None  # waiting for its children, which wait for the server
        smtp_server.handler.gate.set()
        code = parent.wait(timeout=60)
    finally:
        smtp_server.handler.gate.set()
        stop_worker(parent)

    assert code == 0
    statuses = Counter(OutboxMessage.objects.values_list("status", flat=True))
    # The four in hand were finished; every other row was handed back, none left `sending`.
    assert statuses == {OutboxStatus.SENT: 4, OutboxStatus.PENDING: 36}
    assert all(process_gone(pid) for pid in children)
    assert WorkerHeartbeat.objects.stopped().count() == 2


def test_a_second_sigterm_aborts_the_children_and_the_parent_exits_1(smtp_server, tmp_path):
    enqueue_messages(4)
    smtp_server.handler.gate = threading.Event()
    log = tmp_path / "worker.log"
    parent = start_worker(
        "--processes", "2", "--concurrency", "1", "--batch-size", "1", smtp_port=smtp_server.port, log_path=log,
        **PATIENT_CLIENT,
    )  # fmt: skip
    try:
        smtp_server.handler.wait_at_gate(2)
        children = wait_for_live_workers(2)
        parent.send_signal(signal.SIGTERM)
        wait_until(lambda: log_count(log, "outbox.worker_stopping") == 2, what="both children to get the signal")
        parent.send_signal(signal.SIGTERM)  # the server still holds both sends: only an abort ends them
        code = parent.wait(timeout=60)
    finally:
        smtp_server.handler.gate.set()
        stop_worker(parent)

    assert code == 1
    assert log_count(log, "outbox.worker_abort") == 2
    assert all(process_gone(pid) for pid in children)


def test_a_child_killed_with_sigkill_is_replaced_and_the_queue_still_drains(smtp_server, tmp_path):
    log = tmp_path / "worker.log"
    parent = start_worker(
        "--processes", "2", "--concurrency", "1", "--batch-size", "5", "--poll-interval", "0.2",
        smtp_port=smtp_server.port, log_path=log, **PATIENT_CLIENT,
    )  # fmt: skip
    try:
        first = wait_for_live_workers(2)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: log_count(log, "outbox.worker_process_died") == 1, what="the parent to notice")
        assert f"pid={victim}" in log.read_text()
        assert "signal=SIGKILL" in log.read_text()
        # A new worker replaces it (the victim's heartbeat looks alive until it goes stale).
        replacement = wait_until(lambda: live_worker_pids() - first, what="a new worker")
        assert len(replacement) == 1
        assert not process_gone(max(first))  # the survivor was left alone

        messages = enqueue_messages(30)
        smtp_server.handler.gate = threading.Event()
        smtp_server.handler.wait_at_gate(2)  # the survivor and the replacement each send one
        smtp_server.handler.gate.set()
        smtp_server.handler.wait_for(30)
    finally:
        if smtp_server.handler.gate is not None:
            smtp_server.handler.gate.set()
        code = stop_worker(parent)

    assert code == 0
    assert set(smtp_server.handler.message_ids()) == {m.message_id for m in messages}
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 30
    assert log_count(log, "outbox.worker_process_started") == 3


def test_children_stop_when_the_parent_is_killed_with_sigkill(smtp_server, tmp_path):
    parent = start_worker("--processes", "2", "--concurrency", "1", smtp_port=smtp_server.port,
                          log_path=tmp_path / "worker.log")  # fmt: skip
    children = wait_for_live_workers(2)
    parent.kill()
    assert parent.wait(timeout=30) == -signal.SIGKILL

    wait_until(lambda: all(process_gone(pid) for pid in children), what="the children to exit")
    # They took the graceful path (SIGTERM from the kernel), not a silent death.
    assert WorkerHeartbeat.objects.stopped().count() == 2


def test_once_does_not_restart_a_killed_child_and_exits_with_the_worst_code(smtp_server, tmp_path):
    messages = enqueue_messages(20)
    smtp_server.handler.gate = threading.Event()
    log = tmp_path / "worker.log"
    parent = start_worker(
        "--once", "--processes", "2", "--concurrency", "1", "--batch-size", "5", smtp_port=smtp_server.port,
        log_path=log, OUTBOX_WORKER_STALE_AFTER="2", OUTBOX_HEARTBEAT_SECONDS="0.3", **PATIENT_CLIENT,
    )  # fmt: skip
    try:
        smtp_server.handler.wait_at_gate(2)
        os.kill(min(wait_for_live_workers(2)), signal.SIGKILL)
        wait_until(lambda: log_count(log, "outbox.worker_process_died") == 1, what="the parent to notice")
        smtp_server.handler.gate.set()
        code = parent.wait(timeout=120)  # the survivor takes the dead one's rows once its heartbeat is stale
    finally:
        smtp_server.handler.gate.set()
        stop_worker(parent)

    assert code == 128 + signal.SIGKILL
    assert log_count(log, "outbox.worker_process_started") == 2
    assert set(smtp_server.handler.message_ids()) == {m.message_id for m in messages}
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 20
