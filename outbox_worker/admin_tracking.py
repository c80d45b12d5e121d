"""Admin for what providers report: each message's delivery events, and the suppression list.

Kept apart from admin.py: the message admin gains an events inline, a
delivery column and filter; the suppression list gets its own page where a
permitted operator lifts a suppression (recorded in the admin history).
"""

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext_lazy

from . import admin_actions
from .admin import OutboxMessageAdmin
from .models import DeliveryEvent, DeliveryStatus, OutboxMessage, OutboxStatus, Suppression
from .suppression import suppression_lift

# Colours for the provider's verdict, next to the outbox status.
DELIVERY_COLOURS = {
    DeliveryStatus.DELIVERED: "#1e7b34",
    DeliveryStatus.DEFERRED: "#8a6d00",
    DeliveryStatus.SOFT_BOUNCED: "#8a6d00",
    DeliveryStatus.BOUNCED: "#b3261e",
    DeliveryStatus.REJECTED: "#b3261e",
    DeliveryStatus.COMPLAINED: "#b3261e",
}


def delivery_badge(message: OutboxMessage) -> SafeString | str:
    """The provider's verdict ("delivered", "bounced", …), "accepted by the provider" when it said nothing yet."""
    if message.delivery_status:
        return format_html(
            '<span class="outbox-delivery outbox-delivery-{}" style="color:#fff;background:{};padding:1px 7px;'
            'border-radius:8px;white-space:nowrap">{}</span>',
            message.delivery_status,
            DELIVERY_COLOURS.get(message.delivery_status, "#333"),
            message.get_delivery_status_display(),
        )
    if message.status == OutboxStatus.SENT:
        return _("accepted by the provider")
    return "—"


def _local(moment) -> str:
    return timezone.localtime(moment).strftime("%d/%m/%Y %H:%M") if moment else "—"


class DeliveryEventInline(admin.TabularInline):
    model = DeliveryEvent
    verbose_name_plural = gettext_lazy("provider events")
    fields = ["when", "provider", "event_type", "delivery_status", "recipient", "description", "mta_response"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["occurred_at", "id"]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # Events are part of the message's story: whoever may see the message sees them
        # (and only once there are any: most messages never get one, e.g. over SMTP).
        if not request.user.has_perm("outbox_worker.view_outboxmessage"):
            return False
        return obj is None or obj.delivery_events.exists()

    @admin.display(description=gettext_lazy("when"))
    def when(self, event: DeliveryEvent) -> str:
        return _local(event.occurred_at)


@admin.display(description=gettext_lazy("delivery"), ordering="delivery_status")
def delivery(message: OutboxMessage) -> SafeString | str:
    return delivery_badge(message)


def _after(items: list, anchor: str, name: str) -> list:
    """`items` with `name` right after `anchor` (at the end when there is no such anchor)."""
    items = list(items)
    index = items.index(anchor) + 1 if anchor in items else len(items)
    return [*items[:index], name, *items[index:]]


def _extend_message_admin(model_admin: type[admin.ModelAdmin]) -> None:
    """Add the delivery column, filter, field and events inline to the message admin (admin.py stays the UX's)."""
    model_admin.delivery = staticmethod(delivery)
    model_admin.list_display = _after(model_admin.list_display, "status_label", "delivery")
    model_admin.list_filter = [*model_admin.list_filter, "delivery_status"]
    model_admin.inlines = [*model_admin.inlines, DeliveryEventInline]
    if model_admin.fieldsets:
        (title, options), *rest = model_admin.fieldsets
        # Right under the status ("enviado", then "devolvido"): the two halves of the message's fate.
        fields = _after(options.get("fields", []), "status_detail", "delivery")
        model_admin.fieldsets = [(title, {**options, "fields": fields}), *rest]
    model_admin.readonly_fields = [*model_admin.readonly_fields, "delivery"]


_extend_message_admin(OutboxMessageAdmin)


class ActiveFilter(admin.SimpleListFilter):
    title = gettext_lazy("state")
    parameter_name = "active"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", _("active")), ("no", _("lifted"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(lifted_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(lifted_at__isnull=False)
        return queryset


@admin.register(Suppression)
class SuppressionAdmin(admin_actions.ActionsOnlyAdmin):
    list_display = ["address", "reason", "detail", "created", "state", "lifted_by"]
    list_filter = [ActiveFilter, "reason"]
    search_fields = ["address"]
    fields = ["address", "reason", "detail", "source_message", "created_at", "lifted_at", "lifted_by"]
    readonly_fields = fields
    actions = ["lift"]

    def has_lift_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("outbox_worker.lift_suppression")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        # Addresses are stored lower case: an exact, indexed match.
        if search_term.strip():
            return queryset.filter(address=search_term.strip().lower()), False
        return queryset, False

    @admin.display(description=pgettext_lazy("suppression", "created at"), ordering="created_at")
    def created(self, suppression: Suppression) -> str:
        return _local(suppression.created_at)

    @admin.display(description=gettext_lazy("state"))
    def state(self, suppression: Suppression) -> str:
        return (
            _("lifted at %(moment)s") % {"moment": _local(suppression.lifted_at)}
            if suppression.lifted_at
            else _("active")
        )

    @admin.display(description=gettext_lazy("message"))
    def source_message(self, suppression: Suppression) -> SafeString | str:
        message = suppression.event.message if suppression.event_id and suppression.event else None
        if message is None:
            return "—"
        return format_html('<a href="{}">#{}</a>', admin_actions.change_url(message), message.pk)

    @admin.action(
        description=gettext_lazy("Lift from the suppression list (nothing is sent; resend afterwards)"),
        permissions=["lift"],
    )
    def lift(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> None:
        lifted = suppression_lift(suppression_ids=queryset.values_list("pk", flat=True), user_id=request.user.pk)
        if lifted:
            admin_actions.log_grouped(request, {_("Suppression lifted"): lifted})
        count = len(lifted)
        if count == 1:
            text = _("1 address lifted from the suppression list (%(address)s); resend the message if you want.") % {
                "address": lifted[0].address
            }
        else:
            text = _("%(count)d addresses lifted from the suppression list; resend the messages if you want.") % {
                "count": count
            }
        self.message_user(request, text, messages.SUCCESS if count else messages.WARNING)
