"""The outbox admin: health at a glance, find a message, see why it failed, fix it without double sends.

Thin on purpose: numbers come from selectors.py, every change from services.py.
Nothing here sends email; actions only change rows a worker will pick up.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ChangeList
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import admin_actions
from .admin_actions import ConfirmationRow
from .admin_display import (
    error_explanation,
)
from .admin_health import chart_columns
from .admin_list import CappedCountPaginator, KindFilter, OutboxChangeList
from .admin_message_fields import MessageFields
from .admin_text import REFUSALS, local_datetime, plan_text
from .conf import outbox_settings
from .models import DeliveryAttempt, DeliveryStatus, OutboxMessage, OutboxStatus
from .registry import outbox_registry
from .selectors import (
    outbox_action_plan,
    outbox_dashboard,
    outbox_plan_for_message,
    outbox_search,
)
from .services import ActionReport, outbox_cancel, outbox_requeue, outbox_resend, outbox_retry_now


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    verbose_name_plural = _("delivery attempts (each conversation with the email server)")
    fields = ["attempt", "try_number", "started", "duration", "outcome", "smtp_code", "explained_error", "worker"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # Attempts are part of the message's story: whoever may see the message sees them.
        return request.user.has_perm("outbox_worker.view_outboxmessage")

    @admin.display(description=_("started"))
    def started(self, attempt: DeliveryAttempt) -> str:
        # To the second: an operator matches these against provider and worker logs.
        return local_datetime(attempt.started_at, seconds=True)

    @admin.display(description=_("error"))
    def explained_error(self, attempt: DeliveryAttempt) -> SafeString | str:
        return error_explanation(attempt.error, smtp_code=attempt.smtp_code)

    @admin.display(description=_("duration"))
    def duration(self, attempt: DeliveryAttempt) -> str:
        return f"{(attempt.finished_at - attempt.started_at).total_seconds():.2f} s"


@dataclass(frozen=True)
class OperatorAction:
    key: str  # its name for selectors.outbox_action_plan
    admin_name: str  # the ModelAdmin action
    service: Callable[..., ActionReport]
    verb: str  # "Sim, <verb> 2 itens" on the confirmation page
    log_label: str  # how the admin log and the messages name it
    button: str  # the button on a message's own page


OPERATOR_ACTIONS = {
    action.key: action
    for action in [
        OperatorAction("resend", "resend_messages", outbox_resend, _("resend"), _("Resending"), _("Resend")),
        OperatorAction("retry_now", "retry_now", outbox_retry_now, _("try now"), _("Try now"), _("Try now")),
        OperatorAction("cancel", "cancel_messages", outbox_cancel, _("cancel"), _("Cancellation"), _("Cancel")),
        OperatorAction(
            "requeue", "requeue_messages", outbox_requeue, _("hand back"), _("Hand-back"), _("Hand back to the queue")
        ),
    ]
}


@admin.register(OutboxMessage)
class OutboxMessageAdmin(MessageFields, admin_actions.ActionsOnlyAdmin):
    # Eight narrow columns (with admin_tracking's delivery) fit 1366 px beside the filters, the app menu folded: long
    # addresses and subjects are cut (whole on hover); the next attempt rides in the status.
    list_display = ["id", "recipients_short", "subject_short", "status_label", "attempts_label", "created", "sent"]
    list_display_links = ["id", "subject_short"]
    # Every filter is backed by an index (see the model Meta): no full scans per click.
    list_filter = ["status", KindFilter, "created_at"]
    search_fields = ["to", "subject", "message_id", "source"]  # see get_search_results

    @property
    def search_help_text(self) -> str:
        shortcuts = outbox_registry().search_help
        generic = _(
            "A whole email address or a Message-ID: exact and fast. Other text searches part of the recipient "
            "or the subject (slower)."
        )
        return f"{shortcuts} {generic}" if shortcuts else str(generic)

    list_per_page = 50
    paginator = CappedCountPaginator
    # Django would COUNT the whole table again to show "N total" beside a filtered count.
    show_full_result_count = False
    actions = ["resend_messages", "retry_now", "cancel_messages", "requeue_messages"]
    inlines = [DeliveryAttemptInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "status_detail",
                    "last_error_box",
                    "recipients",
                    "subject",
                    "kind_label",
                    "source_link",
                    "attempts_detail",
                    "next_attempt",
                    "created",
                    "sent",
                    "copies",
                ]
            },
        ),
        (_("How the recipient sees it"), {"fields": ["html_preview", "text_preview"]}),
        (_("Headers"), {"fields": ["headers_table"]}),
        (_("Delivery (technical)"), {"fields": ["locked_by", "lease_until", "dedup_key", "updated"]}),
    ]
    # Every field shown is read-only: operators change rows only through the actions.
    readonly_fields = flatten_fieldsets(fieldsets)

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("outbox_worker.resend_outboxmessage")

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        # Retry-now and cancel change a row's schedule or fate: the model's change permission.
        return request.user.has_perm("outbox_worker.change_outboxmessage")

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return OutboxChangeList

    def get_urls(self) -> list:
        status = path(
            "<int:object_id>/status/",
            self.admin_site.admin_view(self.status_view),
            name="outbox_worker_outboxmessage_status",
        )
        return [status, *super().get_urls()]

    def status_view(self, request: HttpRequest, object_id: int) -> JsonResponse:
        """The message's status, polled by its page (static/outbox_worker/status_poll.js) while it is on its way."""
        message = self.get_object(request, str(object_id))
        if message is None or not self.has_view_permission(request, message):
            return JsonResponse({"error": "not found"}, status=404)
        return JsonResponse({"status": message.status, "attempts": message.attempts})

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        if not search_term.strip():
            return queryset, False
        return outbox_search(queryset=queryset, term=search_term), False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        health = outbox_dashboard()
        extra_context = {
            **(extra_context or {}),
            "health": health,
            "health_counts": [(status, label, health.counts[status]) for status, label in OutboxStatus.choices],
            "chart": chart_columns(health.hours),
            "stale_after": f"{outbox_settings.WORKER_STALE_AFTER:g}",
        }
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "detail_actions": self._detail_actions(request, object_id),
            "fix_recipient_url": self._fix_recipient_url(request, object_id),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _fix_recipient_url(self, request: HttpRequest, object_id: str) -> str | None:
        """The host's page to correct this message's address and send again, when the address is what failed.

        Offered for a message that failed, was held by the suppression list, or that the
        provider bounced or rejected; the host decides whether its source has such a page
        and whether this user may use it (registry.fix_recipient_url).
        """
        message = self.get_object(request, object_id)
        if message is None or not message.source:
            return None
        undelivered = message.status in (OutboxStatus.FAILED, OutboxStatus.SUPPRESSED) or message.delivery_status in (
            DeliveryStatus.BOUNCED,
            DeliveryStatus.REJECTED,
        )
        return outbox_registry().fix_recipient_url(message.source, request.user) if undelivered else None

    def _detail_actions(self, request: HttpRequest, object_id: str) -> list[tuple[str, str]]:
        """The actions this user may run on this message that would do something now."""
        message = self.get_object(request, object_id)
        if message is None:
            return []
        allowed = self.get_actions(request)
        return [
            (action.admin_name, action.button)
            for action in OPERATOR_ACTIONS.values()
            if action.admin_name in allowed and outbox_plan_for_message(action=action.key, message=message).allowed
        ]

    # --- actions --------------------------------------------------------------

    @admin.action(description=_("Resend selected messages"), permissions=["resend"])
    def resend_messages(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm_or_run(request, queryset, "resend")

    @admin.action(description=_("Try now (without waiting for the interval)"), permissions=["requeue"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm_or_run(request, queryset, "retry_now")

    @admin.action(description=_("Cancel selected messages"), permissions=["requeue"])
    def cancel_messages(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm_or_run(request, queryset, "cancel")

    @admin.action(description=_("Hand back to the queue (held by a stopped worker)"), permissions=["requeue"])
    def requeue_messages(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm_or_run(request, queryset, "requeue")

    def _confirm_or_run(self, request: HttpRequest, queryset: QuerySet, key: str) -> HttpResponse | None:
        ids = admin_actions.selected_ids(self, request, queryset)
        if ids is None:
            return None
        action = OPERATOR_ACTIONS[key]
        if not admin_actions.is_confirmed(request):
            rows = [
                ConfirmationRow(
                    pk=plan.message.pk,
                    label=f"#{plan.message.pk} {plan.message.subject} → {', '.join(plan.message.to)}",
                    url=admin_actions.change_url(plan.message),
                    status=plan.message.get_status_display(),
                    allowed=plan.allowed,
                    description=plan_text(key, plan),
                )
                for plan in outbox_action_plan(action=key, message_ids=ids)
            ]
            title = ngettext("Confirm: %(verb)s %(n)d message", "Confirm: %(verb)s %(n)d messages", len(rows)) % {
                "verb": action.verb,
                "n": len(rows),
            }
            return admin_actions.render_confirmation(
                self, request, action=action.admin_name, title=title, verb=action.verb, rows=rows
            )
        report = action.service(message_ids=ids)
        self._log_and_tell(request, report, action.log_label)
        if len(ids) == 1:
            # One message (typically from its own page): go back to it to watch what happens.
            return HttpResponseRedirect(reverse("admin:outbox_worker_outboxmessage_change", args=[ids[0]]))
        return None

    def _log_and_tell(self, request: HttpRequest, report: ActionReport, label: str) -> None:
        """Record what happened to each row in the admin log (with the user) and tell the user in short."""
        touched = set(report.changed) | set(report.created) | set(report.refused) | set(report.created.values())
        by_id = OutboxMessage.objects.only("id", "subject", "to").in_bulk(list(touched))
        logged: dict[str, list[Model]] = defaultdict(list)
        logged[_("%(action)s: done") % {"action": label}] = [by_id[pk] for pk in report.changed]
        for original, copy in report.created.items():
            logged[_("%(action)s: copy #%(copy)s created") % {"action": label, "copy": copy}].append(by_id[original])
        refused_by_reason: dict[str, list[int]] = defaultdict(list)
        for pk, refusal in report.refused.items():
            reason = str(REFUSALS[refusal])
            if pk in report.details:
                reason = f"{reason} ({report.details[pk]})"
            logged[_("%(action)s refused: %(reason)s") % {"action": label, "reason": reason}].append(by_id[pk])
            refused_by_reason[reason].append(pk)
        admin_actions.log_grouped(request, logged)
        admin_actions.log_additions(
            request,
            (
                (by_id[copy], _("%(action)s: copy of #%(original)s") % {"action": label, "original": original})
                for original, copy in report.created.items()
            ),
        )
        if report.changed:
            n = len(report.changed)
            done = ngettext("%(action)s: %(n)d message changed.", "%(action)s: %(n)d messages changed.", n)
            self.message_user(request, done % {"action": label, "n": n}, messages.SUCCESS)
        if report.created:
            copies = ", ".join(f"#{copy}" for copy in report.created.values())
            n = len(report.created)
            queued = ngettext("%(action)s: new copy queued: %(ids)s.", "%(action)s: new copies queued: %(ids)s.", n)
            self.message_user(request, queued % {"action": label, "ids": copies}, messages.SUCCESS)
        for reason, pks in refused_by_reason.items():
            listed = ", ".join(f"#{pk}" for pk in pks[:20])
            if len(pks) > 20:
                listed = _("%(listed)s and %(more)d more") % {"listed": listed, "more": len(pks) - 20}
            refused = _("%(action)s refused for %(listed)s: %(reason)s.")
            self.message_user(
                request, refused % {"action": label, "listed": listed, "reason": reason}, messages.WARNING
            )


# The tasks admin (admin_tasks.py) and the delivery events inline, delivery
# column and suppression list (admin_tracking.py) live in their own modules;
# importing them registers them.
from . import admin_tasks, admin_tracking  # noqa: E402, F401
