"""Operator actions on tasks (the admin calls these): run again, cancel. Each a guarded update."""

from collections.abc import Iterable

from django.db.models import F
from django.db.models.functions import Greatest, Now

from .models import OutboxTask, TaskStatus

# A worker holds `running` rows: operators never touch them (its result would be overwritten).
RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.PENDING)


def task_retry(*, task_ids: Iterable[int]) -> int:
    """Make failed, cancelled or backed-off tasks due now, with at least one attempt left; return how many.

    The error history stays: get_result shows every failed run.
    """
    return OutboxTask.objects.filter(pk__in=list(task_ids), status__in=RETRYABLE).update(
        status=TaskStatus.PENDING,
        available_at=Now(),
        max_attempts=Greatest(F("max_attempts"), F("attempts") + 1),
        finished_at=None,
        updated_at=Now(),
    )


def task_cancel(*, task_ids: Iterable[int]) -> int:
    """Cancel tasks that have not started (pending); return how many. A running task is left to finish."""
    return OutboxTask.objects.filter(pk__in=list(task_ids), status=TaskStatus.PENDING).update(
        status=TaskStatus.CANCELLED, finished_at=Now(), updated_at=Now()
    )
