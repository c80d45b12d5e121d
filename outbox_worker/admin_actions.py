"""The confirm-then-run flow shared by the outbox's admin actions (and the enrollment admin's resend).

An action first renders a page listing what will happen to each selected row;
only the POST from that page (with `post=yes`) calls the service. Both steps
go through Django's own action machinery, so the permission checks that hide
an action from a user also refuse it when posted by hand.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.admin import ModelAdmin, helpers
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _


class ActionsOnlyAdmin(ModelAdmin):
    """An admin whose rows nobody adds, edits or deletes: operators change them only through its actions."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# An action loads every selected row and lists them on a page: keep both small.
# "Select all 1 000 000" plus an action is a job for a script, not a web request.
ACTION_LIMIT = 500


@dataclass(frozen=True)
class ConfirmationRow:
    pk: int
    label: str
    url: str
    status: str
    allowed: bool
    description: str


def is_confirmed(request: HttpRequest) -> bool:
    return request.POST.get("post") == "yes"


def selected_ids(modeladmin: ModelAdmin, request: HttpRequest, queryset: QuerySet) -> list[int] | None:
    """Return the selected primary keys, or None (after telling the user) when there are too many."""
    ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: ACTION_LIMIT + 1])
    if len(ids) > ACTION_LIMIT:
        modeladmin.message_user(
            request,
            _("Select at most %(limit)d items per action (use the filters to narrow the selection).")
            % {"limit": ACTION_LIMIT},
            messages.ERROR,
        )
        return None
    return ids


def render_confirmation(
    modeladmin: ModelAdmin,
    request: HttpRequest,
    *,
    action: str,
    title: str,
    verb: str,
    rows: list[ConfirmationRow],
) -> TemplateResponse:
    """Render the page that says, row by row, what `action` will do and asks to confirm."""
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "verb": verb,
        "action": action,
        "rows": rows,
        "allowed_count": sum(row.allowed for row in rows),
        "refused_count": sum(not row.allowed for row in rows),
        "opts": opts,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "changelist_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, "admin/outbox_worker/action_confirmation.html", context)


def change_url(obj: Model) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


def log_grouped(request: HttpRequest, objects_by_message: dict[str, list[Model]], *, action_flag: int = CHANGE) -> None:
    """Write one admin LogEntry per object, naming the user; objects sharing a message share one INSERT."""
    for message, objects in objects_by_message.items():
        if objects:
            LogEntry.objects.log_actions(
                user_id=request.user.pk, queryset=objects, action_flag=action_flag, change_message=message
            )


def log_additions(request: HttpRequest, objects_with_messages: Iterable[tuple[Model, str]]) -> None:
    grouped: dict[str, list[Model]] = defaultdict(list)
    for obj, message in objects_with_messages:
        grouped[message].append(obj)
    log_grouped(request, grouped, action_flag=ADDITION)
