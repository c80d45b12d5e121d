"""Tasks run by the real `manage.py outbox_worker` processes, on PostgreSQL: once, and back after a crash."""

import signal
from collections import Counter

import pytest
from django.db import transaction

from outbox_worker.models import OutboxTask, TaskStatus
from tests.outbox_worker import task_functions as tasks
from tests.processes import live_worker_pids, start_worker, stop_worker, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# A killed worker counts as dead after a few seconds instead of 20.
FAST_LIVENESS = {"OUTBOX_WORKER_STALE_AFTER": "2", "OUTBOX_HEARTBEAT_SECONDS": "0.5"}


def _status(result_id: str) -> str:
    return OutboxTask.objects.get(pk=result_id).status


def test_two_workers_run_every_task_exactly_once(smtp_server, tmp_path):
    workers = [
        start_worker("--poll-interval", "0.2", smtp_port=smtp_server.port, log_path=tmp_path / f"worker{n}.log")
        for n in range(2)
    ]
    try:
        # Queued once both are up (a heartbeat comes after the signal handlers): on a
        # loaded machine the first to start would otherwise run all 300 alone, and
        # the other could be stopped before it could take SIGTERM gracefully.
        pids = {worker.pid for worker in workers}
        wait_until(lambda: pids <= live_worker_pids(), timeout=60, what="both workers' first heartbeat")
        with transaction.atomic():
            results = [tasks.record.enqueue(str(tmp_path), f"t{n}") for n in range(300)]
        wait_until(
            lambda: OutboxTask.objects.filter(status=TaskStatus.SUCCEEDED).count() == 300, timeout=120, what="300 runs"
        )
    finally:
        codes = [stop_worker(worker) for worker in workers]
    assert codes == [0, 0]
    runs = [line.split() for line in (tmp_path / "runs.log").read_text().splitlines()]
    names = Counter(name for name, _pid in runs)
    assert len(runs) == 300 and set(names) == {f"t{n}" for n in range(300)} and max(names.values()) == 1
    # Both processes took part: SKIP LOCKED shared the work instead of serialising it.
    assert {int(pid) for _name, pid in runs} == {worker.pid for worker in workers}
    assert {len(row.worker_ids) for row in OutboxTask.objects.filter(pk__in=[r.id for r in results])} == {1}


def test_a_task_whose_worker_was_killed_comes_back_and_runs(smtp_server, tmp_path):
    with transaction.atomic():
        result = tasks.block_until_released.enqueue(str(tmp_path), "job")
    first = start_worker("--poll-interval", "0.2", smtp_port=smtp_server.port, log_path=tmp_path / "first.log",
                         **FAST_LIVENESS)  # fmt: skip
    wait_until(lambda: (tmp_path / "job.started").exists(), timeout=60, what="the task to start")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert _status(result.id) == TaskStatus.RUNNING  # left behind by the dead worker
    (tmp_path / "job.release").write_text("")
    second = start_worker("--poll-interval", "0.2", smtp_port=smtp_server.port, log_path=tmp_path / "second.log",
                          **FAST_LIVENESS)  # fmt: skip
    try:
        wait_until(lambda: _status(result.id) == TaskStatus.SUCCEEDED, timeout=60, what="the task to come back")
    finally:
        assert stop_worker(second) == 0
    row = OutboxTask.objects.get(pk=result.id)
    assert (row.attempts, row.interruptions) == (2, 1)
    assert len(row.worker_ids) == 2 and row.locked_by == ""
    assert (tmp_path / "job.done").read_text() == str(second.pid)


def test_sigterm_finishes_the_task_in_hand_and_hands_back_the_rest(smtp_server, tmp_path):
    with transaction.atomic():
        in_hand = tasks.block_until_released.enqueue(str(tmp_path), "job")
        queued = [tasks.noop.using(priority=-1).enqueue() for _ in range(3)]
    worker = start_worker("--poll-interval", "0.2", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")
    wait_until(lambda: (tmp_path / "job.started").exists(), timeout=60, what="the task to start")
    worker.send_signal(signal.SIGTERM)
    # The worker cannot have finished: its task waits for our release.
    assert worker.poll() is None
    (tmp_path / "job.release").write_text("")
    assert worker.wait(timeout=60) == 0
    row = OutboxTask.objects.get(pk=in_hand.id)
    assert (row.status, row.attempts, row.return_value) == (TaskStatus.SUCCEEDED, 1, "job")
    # Claimed with it but never started: back in the queue, nothing charged.
    for result in queued:
        left = OutboxTask.objects.get(pk=result.id)
        assert (left.status, left.attempts, left.locked_by) == (TaskStatus.PENDING, 0, "")


def test_a_task_committed_while_the_worker_sleeps_is_picked_up_through_notify(smtp_server, tmp_path):
    # A poll interval far longer than the test's wait: only NOTIFY can wake the worker in time.
    worker = start_worker("--poll-interval", "300", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")
    try:
        wait_until(lambda: "outbox.listen_connected" in (tmp_path / "worker.log").read_text(), what="LISTEN")
        with transaction.atomic():
            result = tasks.add.enqueue(20, 22)
        wait_until(lambda: _status(result.id) == TaskStatus.SUCCEEDED, timeout=60, what="the task to run")
    finally:
        assert stop_worker(worker) == 0
    assert tasks.add.get_result(result.id).return_value == 42
