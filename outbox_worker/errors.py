"""Decide who a failed send is about, and whether trying again can help.

This is the one place that answers "what happens when the server says 451?".
Errors come in three kinds, and treating the third like the first two burns
the whole queue in seconds (one refused sender address fails every message):

- about this message, for good (`Blame.MESSAGE`, not transient): 5xx for its
  recipients at RCPT, 5xx after DATA about its content, an HTTP API's 4xx
  for its request, a message that cannot be built;
- about this message, for now (`Blame.MESSAGE`, transient): 4xx for its
  recipients at RCPT or after DATA (greylisting, a full mailbox);
- about us or the provider (`Blame.PROVIDER`): the connection, TLS, STARTTLS
  or AUTH, our sender refused at MAIL FROM, HELO, 421 "service closing",
  HTTP 401/403/429/5xx. They say nothing about the message: it goes back to
  the queue without spending an attempt and delivery pauses (provider.py).

Errors we cannot name (not OSError, not an SMTP reply, not an HTTP status)
are message-level transient. A provider-level default would let one message
that crashes the code in a way of its own pause every sender for as long as
it is the one probing, which nothing bounds; message-level transient spends
its attempt budget with the persisted backoff, so it always ends, and never
holds up other messages. It costs little: a provider outage reaches us as an
OSError (refused, reset, timed out, DNS, TLS), an SMTP reply or an HTTP
status, and all of those are named below.
"""

import email.errors
import smtplib
import ssl
from dataclasses import dataclass
from enum import StrEnum

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import BadHeaderError

try:  # django-anymail is optional: the outbox works with any email backend.
    from anymail.exceptions import AnymailError, AnymailRecipientsRefused, AnymailSerializationError
except ImportError:  # pragma: no cover - anymail is installed in this project
    AnymailError = AnymailRecipientsRefused = AnymailSerializationError = None

# 5xx replies about our configuration, not this message: 530 authentication
# (or STARTTLS) required, 534 mechanism too weak, 535 credentials invalid,
# 538 encryption required for the mechanism.
CONFIGURATION_CODES = frozenset({530, 534, 535, 538})
# "Service not available, closing transmission channel", whatever the stage.
SERVICE_CLOSING = 421
# A MAIL FROM refusal is about our sender, except "message too big" (the
# SIZE= smtplib announces), which is about this message.
MESSAGE_SIZE_EXCEEDED = 552
# HTTP statuses about our account or the API's health rather than one request.
PROVIDER_HTTP_STATUSES = frozenset({401, 403, 429})


class Blame(StrEnum):
    MESSAGE = "message"  # about this message: its recipients, its content
    PROVIDER = "provider"  # about us or the provider: every message would fail the same way now


class MessageCannotBeBuilt(Exception):
    """An outbox row does not make a valid email (raised when a built message fails verification)."""


class BackendRefused(Exception):
    """The backend returned without sending and without saying why."""


@dataclass(frozen=True)
class Classified:
    blame: Blame
    # Message-level only: the same message may go through later. Provider-level
    # errors are always retried (the message never spends an attempt on them);
    # they carry True so code that only looks at `transient` retries them too.
    transient: bool
    smtp_code: int | None
    description: str
    http_status: int | None = None  # from an HTTP email API (django-anymail)
    # A provider-level refusal of something this message carries (its sender
    # address at MAIL FROM): it may turn out to be about this message alone.
    # The provider gate decides, from what happens to other messages.
    may_be_about_this_message: bool = False

    @property
    def provider_level(self) -> bool:
        return self.blame == Blame.PROVIDER

    @property
    def answered(self) -> bool:
        """Whether the provider replied about this message (a code), as opposed to a transport failure."""
        return self.smtp_code is not None or self.http_status is not None


def describe(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:2000]


def _message(exc: BaseException, *, transient: bool, code: int | None = None, status: int | None = None) -> Classified:
    return Classified(Blame.MESSAGE, transient, code, describe(exc), status)


def _provider(
    exc: BaseException, *, code: int | None = None, status: int | None = None, names_the_message: bool = False
) -> Classified:
    return Classified(Blame.PROVIDER, True, code, describe(exc), status, names_the_message)


def classify(exc: BaseException) -> Classified:
    """Return who `exc`, raised by an email backend while sending one message, is about."""
    # Order matters: smtplib's and requests' errors are OSErrors, and a
    # certificate error is both an SSLError and a ValueError.
    if isinstance(exc, (MessageCannotBeBuilt, BadHeaderError, email.errors.MessageError)):
        return _message(exc, transient=False)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _classify_recipients(exc)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _classify_reply(exc)
    if isinstance(exc, (smtplib.SMTPException, ssl.SSLError, ImproperlyConfigured)):
        # SMTPServerDisconnected, SMTPNotSupportedError (no STARTTLS or AUTH),
        # "no suitable authentication method", certificates, TLS handshakes,
        # a backend missing its settings: all about our side of the line.
        return _provider(exc)
    if AnymailError is not None and isinstance(exc, AnymailError):
        anymail = _classify_anymail(exc)
        if anymail is not None:
            return anymail
    if isinstance(exc, OSError):
        # Refused, reset, timed out, DNS: the provider cannot be reached.
        return _provider(exc)
    if isinstance(exc, (UnicodeError, ValueError)):
        # IDNA failing on a recipient's domain, an address Django cannot parse.
        return _message(exc, transient=False)
    return _message(exc, transient=True)


def _classify_recipients(exc: smtplib.SMTPRecipientsRefused) -> Classified:
    codes = [code for code, _reply in exc.recipients.values()]
    code = codes[0] if codes else None
    if SERVICE_CLOSING in codes:
        # smtplib reports a 421 at RCPT this way after closing the connection.
        return _provider(exc, code=SERVICE_CLOSING)
    if any(code in CONFIGURATION_CODES for code in codes):
        return _provider(exc, code=code)
    # One recipient refused for now is enough to try again: a later try sends
    # to whoever accepts, and a 5xx recipient stays refused either way.
    temporary = [c for c in codes if 400 <= c < 500]
    if temporary:
        return _message(exc, transient=True, code=temporary[0])
    return _message(exc, transient=False, code=code)


def _classify_reply(exc: smtplib.SMTPResponseException) -> Classified:
    code = exc.smtp_code
    if code == SERVICE_CLOSING or code in CONFIGURATION_CODES:
        return _provider(exc, code=code)
    if isinstance(exc, smtplib.SMTPSenderRefused):
        if code == MESSAGE_SIZE_EXCEEDED:
            return _message(exc, transient=False, code=code)
        # Usually our sending domain or account; but a message's own from_email
        # may be the one refused (see provider.ProviderGate).
        return _provider(exc, code=code, names_the_message=True)
    if isinstance(exc, smtplib.SMTPDataError):
        # The reply after DATA is about this message's content (or, for 4xx,
        # a receiving server's momentary state: greylisting, full mailbox).
        return _message(exc, transient=400 <= code < 500, code=code)
    # SMTPHeloError, SMTPConnectError, SMTPAuthenticationError, a STARTTLS
    # refusal: the conversation broke before this message was discussed.
    return _provider(exc, code=code)


def _classify_anymail(exc: Exception) -> Classified | None:
    if isinstance(exc, (AnymailRecipientsRefused, AnymailSerializationError)):
        # The HTTP API's "550 for every recipient": invalid or inactive (bounced,
        # complained) addresses; or a message anymail cannot turn into a request.
        # Sending the same email again gets the same answer.
        return _message(exc, transient=False)
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        return None  # no HTTP answer: a connection error (OSError) or something we cannot name
    if status in PROVIDER_HTTP_STATUSES or status >= 500 or status < 400:
        # 401/403: our API key; 429: our rate; 5xx: their health; a 2xx/3xx
        # with a body anymail cannot read is their misbehaviour, not our message's.
        return _provider(exc, status=status)
    refusal = _account_refusal(getattr(exc, "response", None))
    if refusal is not None:
        return _provider(exc, status=status, names_the_message=refusal == "sender")
    return _message(exc, transient=False, status=status)


# HTTP APIs answer "your sender is not verified" or "your account may not send"
# with a 4xx that looks like any other invalid request (Postmark: 422). The
# commonest set-up mistake, it is about us, not the message: failing messages
# for it would burn the queue. Keyed by what each API puts in its error body.
_POSTMARK_ACCOUNT_CODES = {
    400: "sender",  # Sender signature not found
    401: "sender",  # Sender signature not confirmed
    405: "account",  # Not allowed to send (account out of credits, or disabled)
    412: "account",  # Account pending approval: may send only inside its own domain
}
_RESEND_ACCOUNT_NAMES = {
    "invalid_from_address": "sender",
    "missing_api_key": "account",
    "invalid_api_key": "account",
    "restricted_api_key": "account",
    "daily_quota_exceeded": "account",
    "monthly_quota_exceeded": "account",
}


def _account_refusal(response: object) -> str | None:
    """Return "sender" or "account" if an HTTP API's error body says it refuses us, else None."""
    try:
        body = response.json()  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no response, or a body that is not JSON: nothing to read
        return None
    if not isinstance(body, dict):
        return None
    code = body.get("ErrorCode")
    if isinstance(code, int) and code in _POSTMARK_ACCOUNT_CODES:
        return _POSTMARK_ACCOUNT_CODES[code]
    name = body.get("name")
    if isinstance(name, str):
        return _RESEND_ACCOUNT_NAMES.get(name)
    return None
