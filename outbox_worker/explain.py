"""What a stored delivery error means for an operator, and what to do about it.

The worker stores the provider's words (`last_error`, `DeliveryAttempt.error`:
"SMTPRecipientsRefused: {'ana@…': (550, b'5.1.1 … User unknown')}"). This
module reads them back once, at the edge, and answers in the operator's
language: what happened and the next step. The raw text stays available
("technical details"); nothing here changes how a message is retried, which
is errors.py's job.

Read in this order, most specific first: our own notes (interrupted,
abandoned), the error's class where it names our side (TLS, credentials,
sender, connection, an HTTP API's status), the enhanced status code (RFC
3463: 5.1.1, 5.7.26, 4.7.1), then the bare SMTP code.
"""

import re
from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from .models import SuppressionReason
from .suppression import suppressed_reason

# "5.1.1", "4.7.1", "5.7.26": class.subject.detail (RFC 3463).
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"\((\d{3}), b?['\"]")
_HTTP_STATUS = re.compile(r"\b(?:status(?: code)?|HTTP)\s*:?\s*(\d{3})\b", re.IGNORECASE)
_EXHAUSTED = re.compile(r"^attempts exhausted \((\d+)/(\d+)\)(?:, the last one interrupted)?:?\s*")

_CHECK_WITH_STUDENT = _("Check the address with the recipient, correct it and send again.")
_AUTOMATIC = _("Nothing to do: the outbox tries again by itself.")
_PROVIDER_SETTINGS = _(
    "Provider configuration: check the email settings (host, port, TLS, user and password or API key)."
)


@dataclass(frozen=True)
class Explanation:
    meaning: str | Promise  # what happened, in the operator's words
    action: str | Promise  # the suggested next step
    raw: str  # the provider's own text, for the "technical details"
    exhausted: bool = False  # every attempt is spent: only an operator can send it again


def explain(error: str, *, smtp_code: int | None = None) -> Explanation | None:
    """Return what `error` (as the worker stored it) means and what to do; None for no error."""
    if not error:
        return None
    exhausted = _EXHAUSTED.match(error)
    detail = error[exhausted.end() :] if exhausted else error
    meaning, action = _meaning(detail, smtp_code=smtp_code)
    if exhausted:
        action = _("Every attempt is spent. Fix the cause, then use “Resend”.")
    return Explanation(meaning=meaning, action=action, raw=error, exhausted=bool(exhausted))


# Why a message was held instead of sent, by the suppression's reason code (suppression.suppressed_error).
_SUPPRESSED: dict[SuppressionReason, Promise] = {
    SuppressionReason.HARD_BOUNCE: _("Not sent: an earlier email to this address bounced for good (suppression list)."),
    SuppressionReason.COMPLAINT: _("Not sent: the recipient marked an earlier email as spam (suppression list)."),
}


def _meaning(error: str, *, smtp_code: int | None) -> tuple[str | Promise, str | Promise]:
    reason = suppressed_reason(error)
    if reason is not None:
        return (
            _SUPPRESSED[reason],
            _("If the address is right and the recipient wants email again, lift it from the list, then resend."),
        )
    if error.startswith("interrupted "):
        return (
            _("The worker died while sending this message, more than once: it is not sent again automatically."),
            _("Check the worker's logs and the message's content before resending it."),
        )
    if error.startswith("abandoned:"):
        return (_("The provider took too long to answer; the attempt was abandoned."), _AUTOMATIC)
    # The kind of error first: a TLS, credentials or sender refusal is about our
    # side whatever enhanced code comes with it (535 5.7.8 is not a spam policy).
    found = _by_error_class(error)
    if found:
        return found
    enhanced = _ENHANCED.search(error)
    if enhanced:
        found = _by_enhanced_code(*(int(part) for part in enhanced.groups()))
        if found:
            return found
    code = smtp_code or _first_int(_SMTP_CODE, error)
    if code and 400 <= code < 500:
        return (_("The receiving server refused the message for now (code %(code)s).") % {"code": code}, _AUTOMATIC)
    if code and 500 <= code < 600:
        return (
            _("The receiving server refused the message for good (code %(code)s).") % {"code": code},
            _("Read the technical details; if the address is wrong, check it with the recipient."),
        )
    return (
        _("Unexpected error while sending."),
        _("Read the technical details and tell the development team if it repeats."),
    )


def _by_enhanced_code(klass: int, subject: int, detail: int) -> tuple[str | Promise, str | Promise] | None:
    if klass == 4:
        if subject == 7:
            return (_("The receiving server asked us to try later (greylisting or a policy)."), _AUTOMATIC)
        if (subject, detail) == (2, 2):
            return (_("The recipient's mailbox is full."), _AUTOMATIC)
        return (_("The receiving server refused the message for now."), _AUTOMATIC)
    if klass != 5:
        return None
    if subject == 1 and detail in (1, 10):
        return (_("The address does not exist."), _CHECK_WITH_STUDENT)
    if subject == 1 and detail == 2:
        return (_("The address's domain does not exist or does not receive email."), _CHECK_WITH_STUDENT)
    if subject == 1:
        return (_("The receiving server refused the address."), _CHECK_WITH_STUDENT)
    if subject == 2 and detail == 2:
        return (
            _("The recipient's mailbox is full."),
            _("Ask the recipient to free some space, then resend."),
        )
    if subject == 2:
        return (_("The recipient's mailbox is disabled or cannot receive email."), _CHECK_WITH_STUDENT)
    if subject == 3 and detail == 4:
        return (_("The message is too big for the receiving server."), _("Make the email smaller, then resend."))
    if subject == 7:
        return (
            _("The provider refused the message: a policy about us (sender domain, SPF/DKIM/DMARC or spam)."),
            _("Check the sender domain's verification (SPF, DKIM, DMARC) with the email provider."),
        )
    return None


# Class names as errors.describe() writes them ("ClassName: text"), most specific first.
_BY_CLASS: list[tuple[tuple[str, ...], str | Promise, str | Promise]] = [
    (
        ("MessageCannotBeBuilt", "BadHeaderError", "HeaderTextError", "HeaderParseError", "AnymailSerializationError"),
        _("The email cannot be built from this message (its content or headers are invalid)."),
        _("Fix the content (template, subject, names) and queue a new email."),
    ),
    (
        ("AnymailRecipientsRefused",),
        _("The provider refuses this address (invalid, or it bounced or complained before)."),
        _CHECK_WITH_STUDENT,
    ),
    (
        ("SMTPAuthenticationError",),
        _("The provider refused our credentials."),
        _PROVIDER_SETTINGS,
    ),
    (
        ("SSLError", "SSLCertVerificationError", "CertificateError", "SMTPNotSupportedError"),
        _("The secure connection (TLS) with the provider failed."),
        _PROVIDER_SETTINGS,
    ),
    (
        ("SMTPSenderRefused",),
        _("The provider refused our sender address."),
        _("Check that the sender domain is verified with the email provider."),
    ),
    (
        (
            "ConnectionRefusedError",
            "TimeoutError",
            "gaierror",
            "SMTPServerDisconnected",
            "SMTPConnectError",
            "ConnectionResetError",
            "ConnectionError",
            "OSError",
            "socket.timeout",
        ),
        _("The provider could not be reached; delivery pauses and resumes by itself."),
        _("Nothing to do if it passes; if it lasts, check the provider's status and the network settings."),
    ),
    (
        ("UnicodeError", "UnicodeEncodeError", "ValueError"),
        _("The address cannot be used (its domain is not valid)."),
        _CHECK_WITH_STUDENT,
    ),
]


def _by_error_class(error: str) -> tuple[str | Promise, str | Promise] | None:
    name = error.split(":", 1)[0].strip()
    if name.startswith("Anymail") and name != "AnymailRecipientsRefused":
        return _by_http_status(_first_int(_HTTP_STATUS, error))
    for names, meaning, action in _BY_CLASS:
        if name in names:
            return meaning, action
    return None


def _by_http_status(status: int | None) -> tuple[str | Promise, str | Promise] | None:
    if status in (401, 403):
        return (_("The provider refused our API key."), _PROVIDER_SETTINGS)
    if status == 429:
        return (_("The provider asked us to slow down (rate limit)."), _AUTOMATIC)
    if status and status >= 500:
        return (_("The provider is failing right now; delivery pauses and resumes by itself."), _AUTOMATIC)
    if status and 400 <= status < 500:
        return (
            _("The provider refused this message's request (HTTP %(status)s).") % {"status": status},
            _("Read the technical details; the message's content or address may be invalid."),
        )
    return None


def _first_int(pattern: re.Pattern, text: str) -> int | None:
    match = pattern.search(text)
    return int(match.group(1)) if match else None
