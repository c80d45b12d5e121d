"""A Django Tasks backend on the outbox: `@task` functions queued in the caller's transaction.

    TASKS = {"default": {"BACKEND": "outbox_worker.tasks.OutboxBackend"}}

`some_task.enqueue(...)` writes an `OutboxTask` row in the caller's
transaction (and refuses outside one, like `outbox_enqueue`): the task exists
if and only if the business change that caused it commits. `manage.py
outbox_worker` runs due tasks with the same claim, lease, heartbeat, retries
and shutdown as emails (tasks_run.py). A task that raises `PermanentTaskError`
fails at once; any other exception is retried with the outbox's backoff until
its attempts are spent. OPTIONS: {"MAX_ATTEMPTS": n} (default OUTBOX_MAX_ATTEMPTS).
"""

import json
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string
from django_tasks import TaskResult, TaskResultStatus
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.base import Task, TaskError
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
from django_tasks.utils import normalize_json

from .conf import outbox_settings
from .models import OutboxTask, TaskStatus


class PermanentTaskError(Exception):
    """Raise from a task when running it again cannot help (a 400 from an API, a missing object): failed at once."""


class RetryTaskLater(Exception):
    """Raise from a task to have it retried no sooner than `after` seconds (e.g. an API's Retry-After).

    The attempt is spent as with any other error; the wait is the longer of
    `after` and the usual backoff, and never longer than OUTBOX_BACKOFF's maximum.
    """

    def __init__(self, message: str, *, after: float = 0.0) -> None:
        super().__init__(message)
        self.after = max(0.0, after)


class TaskInterrupted(Exception):
    """Recorded, never raised: the workers running a task died, so it was failed without running it again."""


class TaskOutsideTransaction(InvalidTaskError):
    """A task was enqueued outside `transaction.atomic()`."""


# Django Tasks knows four states; a cancelled task is one that will never run: FAILED.
_RESULT_STATUS = {
    TaskStatus.PENDING: TaskResultStatus.READY,
    TaskStatus.RUNNING: TaskResultStatus.RUNNING,
    TaskStatus.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    TaskStatus.FAILED: TaskResultStatus.FAILED,
    TaskStatus.CANCELLED: TaskResultStatus.FAILED,
}


def json_arguments(args: Any, kwargs: Any) -> tuple[list, dict]:
    """Return `args` and `kwargs` as the JSON they will be stored as, or raise InvalidTaskError saying why not.

    Checked at enqueue, where the caller can still react: a value that is not
    JSON (a model instance, a datetime, NaN) would otherwise fail on the worker.
    """
    return json_value(list(args), what="task arguments"), json_value(dict(kwargs), what="task arguments")


def json_value(value: Any, *, what: str) -> Any:
    """Return `value` as the JSON it will be stored as, or raise InvalidTaskError naming `what`."""
    try:
        value = normalize_json(value)
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidTaskError(f"{what} must be JSON (str, int, float, bool, None, list, dict): {exc}") from None
    return value


def load_task(task_path: str) -> Task:
    """Import the module-level `@task` object named by `task_path`."""
    task = import_string(task_path)
    if not isinstance(task, Task):
        raise ImportError(f"{task_path} is not a task (decorate it with @task)")
    return task


def task_result_from_row(row: OutboxTask, task: Task | None = None) -> TaskResult:
    """The Django Tasks view of a row: status, times, errors (with tracebacks) and return value."""
    task = task or load_task(row.task_path)
    task = task.using(priority=row.priority, queue_name=row.queue_name, backend=row.backend)
    result = TaskResult(
        task=task,
        id=str(row.pk),
        status=_RESULT_STATUS[row.status],
        enqueued_at=row.created_at,
        started_at=row.last_attempted_at,
        finished_at=row.finished_at,
        last_attempted_at=row.last_attempted_at,
        args=row.args,
        kwargs=row.kwargs,
        backend=row.backend,
        errors=[TaskError(**error) for error in row.errors],
        worker_ids=list(row.worker_ids),
    )
    if row.status == TaskStatus.SUCCEEDED:
        object.__setattr__(result, "_return_value", row.return_value)
    return result


def task_enqueue(
    *, task: Task, args: Any, kwargs: Any, backend: str, max_attempts: int, run_after: datetime | None = None
) -> OutboxTask:
    """Write the row for one run of `task`; must run inside `transaction.atomic()`."""
    if not connection.in_atomic_block:
        raise TaskOutsideTransaction(
            f"{task.module_path}.enqueue() must be called inside transaction.atomic(): "
            "the task is queued with the change that causes it, or not at all"
        )
    args, kwargs = json_arguments(args, kwargs)
    return OutboxTask.objects.create(
        task_path=task.module_path,
        backend=backend,
        queue_name=task.queue_name,
        priority=task.priority,
        args=args,
        kwargs=kwargs,
        max_attempts=max_attempts,
        available_at=run_after or timezone.now(),
    )


class OutboxBackend(BaseTaskBackend):
    supports_defer = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        self.max_attempts = int(self.options.get("MAX_ATTEMPTS", outbox_settings.MAX_ATTEMPTS))

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        row = task_enqueue(
            task=task, args=args, kwargs=kwargs, backend=self.alias, max_attempts=self.max_attempts,
            run_after=task.run_after,
        )  # fmt: skip
        return task_result_from_row(row, task)

    def get_result(self, result_id: str) -> TaskResult:
        try:
            row = OutboxTask.objects.get(pk=int(result_id))
        except (ValueError, OutboxTask.DoesNotExist):
            raise TaskResultDoesNotExist(result_id) from None
        return task_result_from_row(row)
