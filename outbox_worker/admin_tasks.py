"""The tasks admin, beside the emails': status, attempts, errors with tracebacks, run again or cancel.

Read-only rows: every change goes through tasks_services.py's guarded updates,
so an operator can never overwrite a row a worker holds.
"""

import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django_tasks.utils import get_module_path

from .models import OutboxTask, TaskStatus
from .tasks import TaskInterrupted
from .tasks_services import task_cancel, task_retry

STATUS_COLOURS = {
    TaskStatus.PENDING: "#8a6d00",
    TaskStatus.RUNNING: "#1f5fa8",
    TaskStatus.SUCCEEDED: "#1e7b34",
    TaskStatus.FAILED: "#b3261e",
    TaskStatus.CANCELLED: "#666",
}


# Errors the outbox itself records (not the task's own exceptions), said in the operator's language.
_MEANINGS = {
    get_module_path(TaskInterrupted): _(
        "The worker died while running this task: it is not run again automatically. "
        "Check the worker's logs before running it again."
    ),
}


def _meaning(error: dict) -> SafeString | str:
    meaning = _MEANINGS.get(error["exception_class_path"])
    return format_html(" — {}", meaning) if meaning else ""


def _pretty(value: object) -> SafeString:
    return format_html("<pre>{}</pre>", json.dumps(value, ensure_ascii=False, indent=2))


@admin.register(OutboxTask)
class OutboxTaskAdmin(admin.ModelAdmin):
    list_display = ["id", "short_name", "queue_name", "priority", "status_badge", "attempts_shown", "available_at",
                    "created_at"]  # fmt: skip
    list_filter = ["status", "queue_name"]
    search_fields = ["task_path", "=id"]
    ordering = ["-created_at", "-id"]
    actions = ["retry_tasks", "cancel_tasks"]
    fields = [
        "task_path", "queue_name", "priority", "status", "attempts", "max_attempts", "interruptions",
        "available_at", "created_at", "last_attempted_at", "finished_at", "locked_by", "locked_until",
        "arguments", "result", "error_history",
    ]  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tasks are enqueued by code, in the transaction of what causes them

    def has_change_permission(self, request: HttpRequest, obj: OutboxTask | None = None) -> bool:
        return False  # viewing only; changes are the actions below

    def has_delete_permission(self, request: HttpRequest, obj: OutboxTask | None = None) -> bool:
        # A held row belongs to its worker; finished ones may go.
        return super().has_delete_permission(request, obj) and (obj is None or obj.status != TaskStatus.RUNNING)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Run again / cancel: for those allowed to change tasks (the form itself stays read-only)."""
        return request.user.has_perm("outbox_worker.change_outboxtask")

    @admin.display(description=_("task"), ordering="task_path")
    def short_name(self, task: OutboxTask) -> str:
        return task.task_path.rsplit(".", 1)[-1]

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, task: OutboxTask) -> SafeString:
        return format_html(
            '<strong style="color:{}">{}</strong>', STATUS_COLOURS.get(task.status, "#333"), task.get_status_display()
        )

    @admin.display(description=_("attempts"), ordering="attempts")
    def attempts_shown(self, task: OutboxTask) -> str:
        return f"{task.attempts}/{task.max_attempts}"

    @admin.display(description=_("arguments"))
    def arguments(self, task: OutboxTask) -> SafeString:
        return _pretty({"args": task.args, "kwargs": task.kwargs})

    @admin.display(description=_("return value"))
    def result(self, task: OutboxTask) -> SafeString | str:
        return _pretty(task.return_value) if task.status == TaskStatus.SUCCEEDED else "—"

    @admin.display(description=_("errors"))
    def error_history(self, task: OutboxTask) -> SafeString | str:
        if not task.errors:
            return "—"
        return format_html_join(
            "", "<p><strong>{}</strong>{}</p><pre>{}</pre>",
            ((error["exception_class_path"], _meaning(error), error["traceback"]) for error in reversed(task.errors)),
        )  # fmt: skip

    @admin.action(description=_("Run the selected tasks again"), permissions=["operate"])
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet[OutboxTask]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        done = task_retry(task_ids=ids)
        self._report(
            request, done, len(ids), ngettext("%d task queued to run again.", "%d tasks queued to run again.", done)
        )

    @admin.action(description=_("Cancel the selected tasks"), permissions=["operate"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[OutboxTask]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        done = task_cancel(task_ids=ids)
        self._report(request, done, len(ids), ngettext("%d task cancelled.", "%d tasks cancelled.", done))

    def _report(self, request: HttpRequest, done: int, asked: int, text: str) -> None:
        self.message_user(request, text % done, messages.SUCCESS if done else messages.WARNING)
        if done < asked:
            skipped = asked - done
            self.message_user(
                request,
                ngettext(
                    "%d task left alone: running now, or not in a state this action applies to.",
                    "%d tasks left alone: running now, or not in a state this action applies to.",
                    skipped,
                )
                % skipped,
                messages.WARNING,
            )
