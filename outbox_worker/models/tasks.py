"""The Django Tasks queue's table (outbox_worker.tasks is the backend that fills it)."""

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class TaskStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


class OutboxTask(models.Model):
    """A Django Tasks task waiting to run, or the record of one that ran (see tasks.py).

    Same claim discipline as OutboxMessage (claim.py): `running` with
    `locked_by`/`locked_until` while a worker holds it, `started_at` and
    `attempts + 1` when a run begins, `interruptions` when its worker died
    mid-run. The arguments are JSON, checked at enqueue.
    """

    # Dotted path of the module-level `@task` object, e.g. "backend.enrollments.tasks.notify_staff".
    task_path = models.CharField(_("task"), max_length=255)
    backend = models.CharField(_("backend"), max_length=64, default="default")
    queue_name = models.CharField(_("queue"), max_length=64, default="default")
    # Higher runs first (Django Tasks: -100 … 100).
    priority = models.SmallIntegerField(_("priority"), default=0)
    args = models.JSONField(_("arguments"), default=list, blank=True)
    kwargs = models.JSONField(_("keyword arguments"), default=dict, blank=True)

    status = models.CharField(_("status"), max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    max_attempts = models.PositiveIntegerField(_("maximum attempts"), default=5)
    started_at = models.DateTimeField(_("run started at"), null=True, blank=True)
    interruptions = models.PositiveSmallIntegerField(_("interruptions"), default=0)
    # As OutboxMessage's; a task always runs alone, so every interruption is a solo one.
    started_solo = models.BooleanField(_("started alone"), default=False)
    solo_interruptions = models.PositiveSmallIntegerField(_("interruptions while alone"), default=0)
    available_at = models.DateTimeField(_("due at"), default=timezone.now)
    locked_by = models.CharField(_("worker"), max_length=128, blank=True)
    locked_until = models.DateTimeField(_("held until"), null=True, blank=True)

    # One entry per failed run: {"exception_class_path": ..., "traceback": ...} (Django Tasks' TaskError).
    errors = models.JSONField(_("errors"), default=list, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    return_value = models.JSONField(_("return value"), null=True, blank=True)
    worker_ids = models.JSONField(_("workers"), default=list, blank=True)

    created_at = models.DateTimeField(_("enqueued at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    last_attempted_at = models.DateTimeField(_("last attempted at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("task")
        verbose_name_plural = _("tasks")
        ordering = ["-created_at", "-id"]
        indexes = [
            # The claim reads only due rows, highest priority first; finished
            # rows stay out of the index.
            models.Index(
                models.F("priority").desc(),
                "available_at",
                "id",
                name="outbox_task_due_idx",
                condition=Q(status="pending"),
            ),
            models.Index(fields=["locked_until"], name="outbox_task_lease_idx", condition=Q(status="running")),
            models.Index(fields=["-created_at", "-id"], name="outbox_task_created_idx"),
            models.Index(fields=["status", "-created_at"], name="outbox_task_status_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.task_path}"
