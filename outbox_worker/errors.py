"""Decide whether a failed send is worth retrying.

This is the one place that answers "what happens when the server says 451?":
- transient: the same message may go through later (4xx replies, refused or
  reset connections, timeouts, authentication trouble that an operator can fix);
- permanent: sending it again cannot help (5xx replies, refused recipients,
  a message that cannot be built).
Anything we do not recognise is transient: the attempt budget still bounds it,
and a mistake in that direction costs a retry, not a lost email.
"""

import smtplib
from dataclasses import dataclass

from django.core.mail import BadHeaderError

try:  # django-anymail is optional: the outbox works with any email backend.
    from anymail.exceptions import AnymailRecipientsRefused
except ImportError:  # pragma: no cover - anymail is installed in this project
    AnymailRecipientsRefused = None

# Authentication and "TLS required" replies are 5xx, but they are about our
# configuration, not this message: retry so mail flows once credentials are fixed.
CONFIGURATION_CODES = frozenset({530, 534, 535, 538})


@dataclass(frozen=True)
class Classified:
    transient: bool
    smtp_code: int | None
    description: str


def _describe(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:2000]


def classify(exc: BaseException) -> Classified:
    """Return whether `exc`, raised by an email backend, is worth retrying."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _msg in exc.recipients.values()]
        transient = bool(codes) and all(400 <= code < 500 for code in codes)
        return Classified(transient, codes[0] if codes else None, _describe(exc))
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        transient = 400 <= code < 500 or code in CONFIGURATION_CODES or code < 400
        return Classified(transient, code, _describe(exc))
    if AnymailRecipientsRefused is not None and isinstance(exc, AnymailRecipientsRefused):
        # The HTTP API's "550 for every recipient": invalid or inactive (bounced,
        # complained) addresses. It carries no status code, and sending the same
        # email again gets the same answer.
        return Classified(False, None, _describe(exc))
    if isinstance(exc, (BadHeaderError, smtplib.SMTPNotSupportedError, UnicodeError, ValueError, TypeError)):
        return Classified(False, None, _describe(exc))
    # HTTP email APIs (django-anymail and the like) put the status on the error.
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        transient = status == 429 or status >= 500 or status in (401, 403)
        return Classified(transient, None, _describe(exc))
    # Connection refused/reset, timeouts, server disconnected, anything else.
    return Classified(True, None, _describe(exc))
