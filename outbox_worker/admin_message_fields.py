"""The outbox message admin's columns and read-only fields: how one message is shown.

A mixin of OutboxMessageAdmin (admin.py), kept apart so the admin class holds
the page's wiring and actions, and this module only what each cell says.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import admin_actions
from .admin_display import REMOTE_REFERENCE, error_explanation, one_line, preview_document, status_badge, whereabouts
from .admin_text import local_datetime
from .models import OutboxMessage, OutboxStatus
from .registry import outbox_registry, source_admin_url


class MessageFields:
    @admin.display(description=_("status"), ordering="status")
    def status_label(self, message: OutboxMessage) -> SafeString:
        if message.status == OutboxStatus.PENDING and message.available_at > timezone.now():
            waiting = _("next: %(at)s") % {"at": local_datetime(message.available_at)}
            return format_html('{} <small class="outbox-next">{}</small>', status_badge(message), waiting)
        return status_badge(message)

    @admin.display(description=_("to"))
    def recipients_short(self, message: OutboxMessage) -> SafeString:
        return one_line(", ".join(message.to), "12rem")

    @admin.display(description=_("subject"), ordering="subject")
    def subject_short(self, message: OutboxMessage) -> SafeString:
        return one_line(message.subject, "12rem")

    @admin.display(description=_("to"))
    def recipients(self, message: OutboxMessage) -> str:
        return ", ".join(message.to)

    @admin.display(description=_("attempts"))
    def attempts_label(self, message: OutboxMessage) -> SafeString:
        # "1/6" alone reads as a score; say what the two numbers are.
        return format_html(
            '<span class="outbox-attempts" title="{}">{}/{}</span>',
            _("deliveries started / allowed; “Resend” grants a fresh budget on top of those used"),
            message.attempts,
            message.max_attempts,
        )

    @admin.display(description=_("attempts"))
    def attempts_detail(self, message: OutboxMessage) -> SafeString:
        # The list's "1/6" spelt out, with why the allowance can grow.
        explained = ngettext(
            "%(used)d of %(allowed)d allowed delivery started",
            "%(used)d of %(allowed)d allowed deliveries started",
            message.attempts,
        ) % {"used": message.attempts, "allowed": message.max_attempts}
        return format_html(
            '<span class="outbox-attempts-detail">{}</span> <small class="outbox-attempts-help">{}</small>',
            explained,
            _(
                "A delivery is counted when it starts; a provider outage costs none. "
                "“Resend” grants new attempts on top of those used."
            ),
        )

    @admin.display(description=_("status"))
    def status_detail(self, message: OutboxMessage) -> SafeString:
        """The badge and, while the message is on its way, where it is; the page refreshes it by itself."""
        return format_html(
            '<span class="outbox-live-status" data-poll-url="{}" data-status="{}">{} '
            '<span class="outbox-whereabouts">{}</span></span>',
            reverse("admin:outbox_worker_outboxmessage_status", args=[message.pk]),
            message.status,
            status_badge(message),
            whereabouts(message),
        )

    @admin.display(description=_("kind"))
    def kind_label(self, message: OutboxMessage) -> str:
        return outbox_registry().kind_label(message.kind) or "—"

    @admin.display(description=_("next attempt"), ordering="available_at")
    def next_attempt(self, message: OutboxMessage) -> str:
        return local_datetime(message.available_at) if message.status == OutboxStatus.PENDING else "—"

    @admin.display(description=_("created at"), ordering="created_at")
    def created(self, message: OutboxMessage) -> str:
        return local_datetime(message.created_at)

    @admin.display(description=_("sent at"), ordering="sent_at")
    def sent(self, message: OutboxMessage) -> str:
        return local_datetime(message.sent_at)

    @admin.display(description=_("leased until"))
    def lease_until(self, message: OutboxMessage) -> str:
        return local_datetime(message.locked_until, seconds=True)

    @admin.display(description=_("updated at"))
    def updated(self, message: OutboxMessage) -> str:
        return local_datetime(message.updated_at, seconds=True)

    @admin.display(description=_("source"))
    def source_link(self, message: OutboxMessage) -> SafeString | str:
        if not message.source:
            return "—"
        label = outbox_registry().labels_for_sources([message.source])[message.source]
        url = source_admin_url(message.source)
        return format_html('<a href="{}">{}</a>', url, label) if url else label

    @admin.display(description=_("last error"))
    def last_error_box(self, message: OutboxMessage) -> SafeString | str:
        if not message.last_error:
            return "—"
        # Once the message is queued again the error is history, not its state.
        history = message.status in (OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.SENT)
        note = _("previous error (the message went back to the queue since):") if history else ""
        return format_html(
            '<div class="outbox-last-error{}">{}{}</div>',
            " outbox-error-history" if history else "",
            format_html("<em>{}</em> ", note) if note else "",
            error_explanation(message.last_error),
        )

    @admin.display(description=_("resends"))
    def copies(self, message: OutboxMessage) -> SafeString | str:
        links = []
        if message.resent_from_id:
            url = admin_actions.change_url(message.resent_from)
            links.append(format_html('{} <a href="{}">#{}</a>', _("copy of"), url, message.resent_from_id))
        for copy in message.resends.only("id", "status").order_by("id"):
            url = admin_actions.change_url(copy)
            links.append(format_html('{} <a href="{}">#{}</a> ({})', _("resent as"), url, copy.pk, status_badge(copy)))
        return format_html_join("; ", "{}", ((link,) for link in links)) if links else "—"

    @admin.display(description="HTML")
    def html_preview(self, message: OutboxMessage) -> SafeString | str:
        if not message.body_html:
            return _("(no HTML version)")
        # sandbox="" blocks scripts, forms and navigation from the email's HTML;
        # srcdoc is escaped by format_html, so the email cannot break out of the attribute.
        # The document carries its own policy: nothing loads from anywhere, so a
        # tracking pixel does not fire when an operator looks at the email.
        frame = format_html(
            '<iframe class="outbox-html-preview" sandbox="" srcdoc="{}" title="{}" '
            'style="width:100%;max-width:760px;height:360px;border:1px solid #ccc;background:#fff"></iframe>',
            preview_document(message.body_html),
            _("the email's HTML"),
        )
        if not REMOTE_REFERENCE.search(message.body_html):
            return frame
        note = format_html(
            '<p class="outbox-remote-blocked" style="margin:0 0 4px">{}</p>',
            _(
                "Remote images, fonts and CSS are blocked in this preview "
                "(the recipient may see them in their mail client)."
            ),
        )
        return note + frame

    @admin.display(description=_("text"))
    def text_preview(self, message: OutboxMessage) -> SafeString:
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', message.body_text)

    @admin.display(description=_("headers"))
    def headers_table(self, message: OutboxMessage) -> SafeString:
        rows = [
            ("From", message.from_email),
            ("To", ", ".join(message.to)),
            ("Cc", ", ".join(message.cc)),
            ("Reply-To", ", ".join(message.reply_to)),
            ("Subject", message.subject),
            ("Message-ID", message.message_id),
            *message.headers.items(),
        ]
        body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", ((k, v) for k, v in rows if v))
        return format_html("<table>{}</table>", body)
