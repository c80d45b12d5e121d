"""The outbox admin's HTML fragments: status badges, explained errors, where a message is, the safe preview.

Kept apart from admin.py so the ModelAdmin reads as a list of columns and
actions; the enrollment admin (or any host's) reuses these fragments.
"""

import re

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .admin_text import local_datetime
from .explain import explain
from .models import OutboxMessage, OutboxStatus, WorkerHeartbeat

STATUS_COLOURS = {
    OutboxStatus.PENDING: "#8a6d00",
    OutboxStatus.SENDING: "#1f5fa8",
    OutboxStatus.SENT: "#1e7b34",
    OutboxStatus.FAILED: "#b3261e",
    OutboxStatus.CANCELLED: "#666",
    # Held by the suppression list: not a delivery failure (red) nor an operator's
    # cancel (grey); an address to correct or a suppression to lift.
    OutboxStatus.SUPPRESSED: "#6b3fa0",
}


# The preview's own policy, inside the document: inline styles (emails are
# made of them) and embedded data: images, nothing fetched from anywhere.
PREVIEW_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"
# What a mail reader would fetch from another host (http:, https:, //): src=,
# srcset=, background=, poster=, <link href=>, CSS url(...) and @import. A plain
# link (<a href>) fetches nothing and is not counted.
REMOTE_REFERENCE = re.compile(
    r"""(?:\b(?:src|srcset|background|poster)\s*=\s*["']?|<link\b[^>]*\bhref\s*=\s*["']?"""
    r"""|url\(\s*["']?|@import\s+["']?)\s*(?:https?:)?//""",
    re.IGNORECASE,
)


def preview_document(body_html: str) -> str:
    """Return `body_html` preceded by a doctype and a CSP meta tag that the email cannot undo.

    The meta goes first so it lands in <head> before anything from the email;
    the email's own doctype and <html>/<head> tags that follow are then ignored
    by the HTML parser. A policy only ever narrows: the email cannot add to it.
    """
    return f'<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="{PREVIEW_POLICY}">{body_html}'


def status_badge(message: OutboxMessage) -> SafeString:
    colour = STATUS_COLOURS.get(message.status, "#333")
    return format_html(
        '<span class="outbox-status outbox-status-{}" style="color:#fff;background:{};padding:1px 7px;'
        'border-radius:8px;white-space:nowrap">{}</span>',
        message.status,
        colour,
        message.get_status_display(),
    )


def one_line(text: str, width: str) -> SafeString:
    """`text` on one line, cut with an ellipsis at `width`; the whole of it on hover."""
    return format_html(
        '<span class="outbox-cut" title="{}" style="display:inline-block;max-width:{};overflow:hidden;'
        'text-overflow:ellipsis;white-space:nowrap;vertical-align:bottom">{}</span>',
        text,
        width,
        text,
    )


def error_explanation(error: str, *, smtp_code: int | None = None) -> SafeString | str:
    """The error's meaning and next step, with the provider's raw words behind a "technical details" toggle."""
    explained = explain(error, smtp_code=smtp_code)
    if explained is None:
        return "—"
    return format_html(
        '<div class="outbox-explained"><strong class="outbox-meaning">{}</strong> '
        '<span class="outbox-next-step">{}</span>'
        '<details class="outbox-raw-error"><summary>{}</summary><code>{}</code></details></div>',
        explained.meaning,
        explained.action,
        _("technical details"),
        explained.raw,
    )


def whereabouts(message: OutboxMessage) -> str:
    """Where a message on its way is now: due, waiting, with a live worker, or left by a stopped one."""
    if message.status == OutboxStatus.PENDING:
        if message.available_at <= timezone.now():
            paused = WorkerHeartbeat.objects.alive().filter(paused_since__isnull=False).first()
            if paused is not None:
                return str(
                    _("delivery paused since %(since)s: %(reason)s; it resumes by itself")
                    % {"since": local_datetime(paused.paused_since), "reason": paused.pause_reason}
                )
            return str(_("waiting for a worker"))
        return str(_("next attempt at %(at)s") % {"at": local_datetime(message.available_at)})
    if message.status != OutboxStatus.SENDING:
        return ""
    if message.is_held():
        return str(_("a worker is delivering it now (%(worker)s)") % {"worker": message.locked_by})
    holder = WorkerHeartbeat.objects.filter(worker_id=message.locked_by).first()
    seen = local_datetime(holder.last_seen_at, seconds=True) if holder else "—"
    return str(
        _(
            "held by a stopped worker (%(worker)s, last seen %(seen)s): it goes back to the queue at the next "
            "poll of a live worker, or hand it back now"
        )
        % {"worker": message.locked_by, "seen": seen}
    )
