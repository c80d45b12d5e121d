"""The tasks admin: see a task's status, attempts and tracebacks; run it again or cancel it, never a held one."""

import pytest
from django.urls import reverse
from django.utils import timezone

from outbox_worker.models import OutboxTask, TaskStatus
from tests.staff import PASSWORD, make_staff

CHANGELIST = reverse("admin:outbox_worker_outboxtask_changelist")
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py"\nRuntimeError: <the webhook said 503>'


def _task(status: str, **fields) -> OutboxTask:
    return OutboxTask.objects.create(task_path="tests.outbox_worker.task_functions.noop", status=status, **fields)


@pytest.fixture
def operator_client(client):
    make_staff("tarefas", "outbox_worker.view_outboxtask", "outbox_worker.change_outboxtask")
    client.login(username="tarefas", password=PASSWORD)
    return client


@pytest.fixture
def viewer_client(client):
    make_staff("leitora", "outbox_worker.view_outboxtask")
    client.login(username="leitora", password=PASSWORD)
    return client


def _run_action(client, action: str, *tasks: OutboxTask):
    return client.post(CHANGELIST, {"action": action, "_selected_action": [t.pk for t in tasks]}, follow=True)


@pytest.mark.django_db
def test_the_list_and_the_detail_show_status_attempts_and_the_traceback(operator_client):
    failed = _task(TaskStatus.FAILED, attempts=3, max_attempts=3, last_error=TRACEBACK,
                   errors=[{"exception_class_path": "builtins.RuntimeError", "traceback": TRACEBACK}])  # fmt: skip
    listing = operator_client.get(CHANGELIST).content.decode()
    assert "noop" in listing and "3/3" in listing
    detail = operator_client.get(reverse("admin:outbox_worker_outboxtask_change", args=[failed.pk])).content.decode()
    assert "builtins.RuntimeError" in detail
    assert "&lt;the webhook said 503&gt;" in detail  # escaped, not markup


@pytest.mark.django_db
def test_run_again_requeues_failed_and_cancelled_tasks_but_never_a_running_one(operator_client):
    failed = _task(TaskStatus.FAILED, attempts=3, max_attempts=3)
    cancelled = _task(TaskStatus.CANCELLED)
    running = _task(TaskStatus.RUNNING, locked_by="w:1", locked_until=timezone.now(), attempts=1)
    response = _run_action(operator_client, "retry_tasks", failed, cancelled, running)
    assert "2 tarefas enfileiradas para executar de novo." in response.content.decode()
    assert "1 tarefa não alterada" in response.content.decode()
    failed.refresh_from_db()
    assert (failed.status, failed.max_attempts) == (TaskStatus.PENDING, 4)  # one more attempt than it spent
    assert OutboxTask.objects.get(pk=cancelled.pk).status == TaskStatus.PENDING
    running.refresh_from_db()
    assert (running.status, running.locked_by) == (TaskStatus.RUNNING, "w:1")


@pytest.mark.django_db
def test_cancel_stops_pending_tasks_only(operator_client):
    pending = _task(TaskStatus.PENDING)
    running = _task(TaskStatus.RUNNING, locked_by="w:1", locked_until=timezone.now())
    _run_action(operator_client, "cancel_tasks", pending, running)
    assert OutboxTask.objects.get(pk=pending.pk).status == TaskStatus.CANCELLED
    assert OutboxTask.objects.get(pk=running.pk).status == TaskStatus.RUNNING


@pytest.mark.django_db
def test_staff_who_may_only_view_tasks_cannot_run_or_cancel_them(viewer_client):
    pending = _task(TaskStatus.PENDING)
    assert "cancel_tasks" not in viewer_client.get(CHANGELIST).content.decode()
    _run_action(viewer_client, "cancel_tasks", pending)
    assert OutboxTask.objects.get(pk=pending.pk).status == TaskStatus.PENDING


@pytest.mark.django_db
def test_a_task_failed_because_its_workers_died_is_explained_in_portuguese(operator_client):
    interrupted = {"exception_class_path": "outbox_worker.tasks.TaskInterrupted", "traceback": "interrupted 2 times"}
    task = _task(TaskStatus.FAILED, attempts=2, interruptions=2, errors=[interrupted])

    detail = operator_client.get(
        reverse("admin:outbox_worker_outboxtask_change", args=[task.pk]), HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9"
    ).content.decode()

    assert "O worker morreu enquanto executava esta tarefa" in detail
    assert "interrupted 2 times" in detail  # the recorded detail stays, as technical text
