"""The admin's words for the services' reason codes and plans, and its one date format."""

from datetime import datetime

from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from .models import OutboxStatus
from .services import Refusal

# One format everywhere in the outbox admin, whatever the locale's defaults:
# day first, as the operators read dates ("12/02/2026" is 12 February).
DATETIME_FORMAT = "d/m/Y H:i"
DATETIME_SECONDS_FORMAT = "d/m/Y H:i:s"

REFUSALS: dict[Refusal, Promise] = {
    Refusal.HELD: _("a worker is delivering it right now"),
    Refusal.CHANGED_MEANWHILE: _("changed by someone or something else meanwhile"),
    Refusal.ALREADY_QUEUED: _("it is already in the queue"),
    Refusal.ALREADY_DUE: _("it is already due to be sent"),
    Refusal.NOT_WAITING: _("only pending messages wait for a new attempt"),
    Refusal.FINISHED: _("it was already sent, failed or cancelled"),
    Refusal.NOT_STALLED: _("only a message held by a stopped worker can be handed back"),
    Refusal.INVALID_EMAIL: _("a copy would not be a valid email today"),
}

# What an allowed action does, by action and (where it matters) the message's status.
EFFECTS: dict[tuple[str, str | None], Promise] = {
    ("resend", OutboxStatus.SENT): _("a new copy (new Message-ID) is queued; the original is kept"),
    ("resend", None): _("goes back to the queue now, with new attempts"),
    ("retry_now", None): _("is sent now instead of waiting for its next attempt"),
    ("cancel", None): _("is cancelled and will not be sent"),
    ("requeue", None): _("goes back to the queue now; a live worker sends it"),
}


def plan_text(action: str, plan) -> str:  # plan: selectors.PlannedChange
    """Say what `action` will do to the plan's message, or why it is refused."""
    if plan.refusal is not None:
        return str(_("refused: %(reason)s") % {"reason": REFUSALS[plan.refusal]})
    effect = EFFECTS.get((action, plan.message.status)) or EFFECTS[(action, None)]
    return str(effect)


def local_datetime(moment: datetime | None, *, seconds: bool = False) -> str:
    """Format `moment` in local time in the admin's one format; "—" for none."""
    if moment is None:
        return "—"
    return date_format(timezone.localtime(moment), DATETIME_SECONDS_FORMAT if seconds else DATETIME_FORMAT)
