"""The Django Tasks backend: enqueue in the caller's transaction, run by the outbox worker, results back."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist

from outbox_worker.conf import outbox_settings
from outbox_worker.models import OutboxTask, TaskStatus
from outbox_worker.retry import RetryPolicy
from outbox_worker.tasks import TaskOutsideTransaction
from outbox_worker.tasks_run import TaskRunner
from tests.factories import enqueue_messages
from tests.outbox_worker import task_functions as tasks


@pytest.mark.django_db(transaction=True)
def test_enqueue_outside_a_transaction_is_refused_and_writes_nothing():
    with pytest.raises(TaskOutsideTransaction, match=r"inside transaction\.atomic\(\)"):
        tasks.add.enqueue(1, 2)
    assert not OutboxTask.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_leaves_no_task():
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.add.enqueue(1, 2)
        raise RuntimeError("the business write failed")
    assert not OutboxTask.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((object(),), {}), ((), {"when": timezone.now()}), ((float("nan"),), {}), ((), {"deep": {"x": {1, 2}}})],
)
def test_arguments_that_are_not_json_are_refused_at_enqueue(args, kwargs):
    with pytest.raises(InvalidTaskError, match="must be JSON"):
        tasks.record.enqueue(*args, **kwargs)
    assert not OutboxTask.objects.exists()


@pytest.mark.django_db
def test_enqueue_stores_what_the_task_says_and_get_result_reads_it_back():
    run_after = timezone.now() + timedelta(hours=1)
    result = tasks.record.using(priority=7, queue_name="reports", run_after=run_after).enqueue("dir", name="x")
    row = OutboxTask.objects.get(pk=result.id)
    assert (row.task_path, row.queue_name, row.priority, row.args, row.kwargs) == (
        "tests.outbox_worker.task_functions.record", "reports", 7, ["dir"], {"name": "x"},
    )  # fmt: skip
    assert row.available_at == run_after
    fetched = tasks.record.get_result(result.id)
    assert fetched.status == TaskResultStatus.READY
    assert (fetched.task.priority, fetched.task.queue_name, fetched.args) == (7, "reports", ["dir"])
    with pytest.raises(TaskResultDoesNotExist):
        tasks.record.get_result("999999")


@pytest.mark.django_db
def test_a_task_runs_and_its_return_value_comes_back_through_get_result(make_worker):
    result = tasks.add.enqueue(2, 3)
    stats = make_worker().run()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1 and result.finished_at is not None
    assert stats["task_succeeded"] == 1


@pytest.mark.django_db
def test_a_permanent_error_fails_the_task_at_once_with_its_traceback(make_worker):
    result = tasks.fail_permanently.enqueue("the webhook said 400")
    make_worker().run()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 1
    [error] = result.errors
    assert error.exception_class_path == "outbox_worker.tasks.PermanentTaskError"
    assert "the webhook said 400" in error.traceback and "Traceback" in error.traceback
    assert OutboxTask.objects.get(pk=result.id).last_error == error.traceback


@pytest.mark.django_db
def test_other_errors_are_retried_with_backoff_until_attempts_are_spent(make_worker):
    result = tasks.fail_transiently.enqueue("try again")
    row = OutboxTask.objects.get(pk=result.id)
    assert row.max_attempts == outbox_settings.MAX_ATTEMPTS
    for attempt in range(1, row.max_attempts + 1):
        before = timezone.now()
        make_worker().run()
        row.refresh_from_db()
        assert row.attempts == attempt
        if attempt < row.max_attempts:
            assert row.status == TaskStatus.PENDING
            assert row.available_at > before  # backed off, not due again at once
            OutboxTask.objects.filter(pk=row.pk).update(available_at=timezone.now())
    assert row.status == TaskStatus.FAILED
    result.refresh()
    assert [e.exception_class_path for e in result.errors] == ["builtins.RuntimeError"] * row.max_attempts


@pytest.mark.django_db
def test_a_task_that_recovers_succeeds_on_a_later_attempt(make_worker, tmp_path):
    result = tasks.fail_until.enqueue(str(tmp_path), 1)
    make_worker().run()
    OutboxTask.objects.filter(pk=result.id).update(available_at=timezone.now())
    make_worker().run()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == "ok after 2"
    assert len(result.errors) == 1 and result.attempts == 2


@pytest.mark.django_db
def test_higher_priority_runs_first_and_run_after_waits(make_worker, tmp_path):
    later = tasks.record.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(str(tmp_path), "later")
    tasks.record.using(priority=-5).enqueue(str(tmp_path), "low")
    tasks.record.enqueue(str(tmp_path), "normal")
    tasks.record.using(priority=50).enqueue(str(tmp_path), "high")
    make_worker().run()
    runs = [line.split()[0] for line in (tmp_path / "runs.log").read_text().splitlines()]
    assert runs == ["high", "normal", "low"]
    assert OutboxTask.objects.get(pk=later.id).status == TaskStatus.PENDING


@pytest.mark.django_db
def test_a_worker_runs_only_the_queues_it_was_given(make_worker):
    reports = tasks.in_reports_queue.enqueue()
    default = tasks.noop.enqueue()
    make_worker(queues=["reports"]).run()
    assert OutboxTask.objects.get(pk=reports.id).status == TaskStatus.SUCCEEDED
    assert OutboxTask.objects.get(pk=default.id).status == TaskStatus.PENDING
    make_worker(queues=[]).run()  # emails only
    assert OutboxTask.objects.get(pk=default.id).status == TaskStatus.PENDING
    make_worker().run()  # every queue
    assert OutboxTask.objects.get(pk=default.id).status == TaskStatus.SUCCEEDED


@pytest.mark.django_db
def test_emails_and_tasks_both_progress_when_both_queues_are_full(make_worker, smtp_server, settings):
    settings.OUTBOX_TASK_BATCH_SIZE = 5
    enqueue_messages(40)
    with transaction.atomic():
        for n in range(20):
            tasks.observe.enqueue(str(n))
    seen: list[int] = []
    tasks.OBSERVERS.append(lambda _label: seen.append(len(smtp_server.handler.received)))
    try:
        make_worker(batch_size=10).run()
    finally:
        tasks.OBSERVERS.clear()
    assert len(smtp_server.handler.received) == 40 and len(seen) == 20
    # Tasks ran while emails were still queued, and emails went out between task batches.
    assert seen[0] < 40
    assert seen[-1] > seen[0]


@pytest.mark.django_db
def test_a_task_whose_workers_died_twice_running_it_is_failed_without_running_again(make_worker, tmp_path):
    result = tasks.record.enqueue(str(tmp_path), "suspect")
    # As a worker killed mid-run leaves it: held, started, by a worker with no heartbeat; once interrupted before.
    OutboxTask.objects.filter(pk=result.id).update(
        status=TaskStatus.RUNNING, locked_by="dead:1:abc", locked_until=timezone.now() - timedelta(seconds=1),
        started_at=timezone.now(), started_solo=True, attempts=2, interruptions=1, solo_interruptions=1,
    )  # fmt: skip
    make_worker().run()
    row = OutboxTask.objects.get(pk=result.id)
    assert (row.status, row.interruptions, row.solo_interruptions, row.attempts) == (TaskStatus.FAILED, 2, 2, 2)
    assert "interrupted 2 times" in row.last_error
    assert not (tmp_path / "runs.log").exists()


@pytest.mark.django_db
def test_a_return_value_that_is_not_json_fails_the_task_without_running_it_again(make_worker):
    result = tasks.return_a_set.enqueue()
    make_worker().run()
    row = OutboxTask.objects.get(pk=result.id)
    assert (row.status, row.attempts) == (TaskStatus.FAILED, 1)
    assert "return value must be JSON" in row.last_error


@pytest.mark.django_db
def test_the_command_runs_only_the_queues_named_by_its_queues_option():
    reports = tasks.in_reports_queue.enqueue()
    default = tasks.noop.enqueue()
    call_command("outbox_worker", "--once", "--poll-interval", "0", "--queues", "reports, other", stdout=StringIO())
    assert OutboxTask.objects.get(pk=reports.id).status == TaskStatus.SUCCEEDED
    assert OutboxTask.objects.get(pk=default.id).status == TaskStatus.PENDING


def make_runner(recheck_every: float = 3600) -> TaskRunner:
    return TaskRunner(
        worker_id="w:1:a", queues=None, batch_size=10, lease_seconds=60,
        policy=RetryPolicy.from_settings(), stopping=lambda: False, recheck_every=recheck_every,
    )  # fmt: skip


@pytest.mark.django_db
def test_while_emails_flow_an_empty_task_queue_is_claimed_again_only_after_a_wake_up():
    runner = make_runner(recheck_every=3600)
    assert runner.process_batch(force=False, generation=1) == 0  # claimed: nothing there
    result = tasks.noop.enqueue()
    assert runner.process_batch(force=False, generation=1) == 0  # skipped: no wake-up since
    assert OutboxTask.objects.get(pk=result.id).status == TaskStatus.PENDING
    assert runner.process_batch(force=False, generation=2) == 1  # NOTIFY bumped the generation
    assert OutboxTask.objects.get(pk=result.id).status == TaskStatus.SUCCEEDED
    tasks.noop.enqueue()
    assert runner.process_batch(force=False, generation=2) == 1  # the last claim found work: claim again


@pytest.mark.django_db
def test_senders_woken_together_make_one_task_claim_between_them():
    runner = make_runner()
    tickets = [runner.claims.ticket() for _ in range(8)]  # eight senders woken by one NOTIFY
    assert runner.process_batch(ticket=tickets[0]) == 0  # the first claims: nothing there
    result = tasks.noop.enqueue()  # committed since: the idle lock's must-claim covers it

    assert [runner.process_batch(ticket=ticket) for ticket in tickets[1:]] == [0] * 7
    assert runner.claims.begun == 1
    assert OutboxTask.objects.get(pk=result.id).status == TaskStatus.PENDING
    assert runner.process_batch(ticket=None) == 1  # the must-claim (under the idle lock) is never skipped


@pytest.mark.django_db
def test_while_emails_trickle_an_empty_task_queue_is_claimed_again_after_the_hold_off_not_the_poll_interval():
    runner = make_runner(recheck_every=3600)
    assert runner.process_batch(force=False, generation=1) == 0  # claimed: nothing there
    result = tasks.noop.enqueue()

    assert runner.process_batch(force=False, generation=1, recheck_every=3600) == 0  # skipped
    assert runner.process_batch(force=False, generation=1, recheck_every=0) == 1  # the hold-off has passed
    assert OutboxTask.objects.get(pk=result.id).status == TaskStatus.SUCCEEDED
