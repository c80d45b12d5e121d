"""What text may reach an email header, and building an email that is checked before it leaves.

Python 3.11 folds a header on every character `str.splitlines()` splits on
(VT, FF, FS, GS, RS, NEL, U+2028, U+2029), not only CR and LF, and its fix
(`verify_generated_headers`, CVE-2024-6923) came in later releases. Django's
`EmailValidator` accepts control characters inside a quoted local part. So a
header value here is refused if it holds any control character or line or
paragraph separator at all (`header_text_problem`), every domain must have an
ASCII (IDNA) form, and `build_email` parses the bytes it built back and
refuses a message whose headers did not survive the round trip.
"""

import re
from email import policy
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import sanitize_address

from .errors import MessageCannotBeBuilt
from .models import OutboxMessage

# C0 controls (tab included), DEL and the C1 controls, and the two Unicode
# separators: together a superset of what str.splitlines() breaks a line on.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field-name: printable ASCII except ":"
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_BLANKS = re.compile(r"[ \t]+")

# Reason codes for callers to turn into their own language.
CONTROL_CHARACTER = "control_character"
LINE_SEPARATOR = "line_separator"
BAD_HEADER_NAME = "bad_header_name"
DOMAIN_NOT_IDNA = "domain_not_idna"
NOT_AN_ADDRESS = "not_an_address"


class HeaderTextError(ValueError):
    """Text that must not reach an email header; `reason` is one of the codes above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def header_text_problem(value: str) -> str | None:
    """Return why `value` may not appear in a header (a reason code), or None if it may."""
    match = _FORBIDDEN.search(value)
    if match is None:
        return None
    return LINE_SEPARATOR if match.group() in "\u2028\u2029" else CONTROL_CHARACTER


def check_header_text(value: str, *, what: str) -> None:
    """Raise HeaderTextError if `value` (named `what` in the message) may not appear in a header."""
    reason = header_text_problem(value)
    if reason is not None:
        char = _FORBIDDEN.search(value).group()
        raise HeaderTextError(reason, f"{what} must not contain U+{ord(char):04X} ({reason.replace('_', ' ')})")


def idna_domain(domain: str) -> str:
    """Return `domain` in its ASCII form, exactly as Django's email backend will send it.

    Django encodes with Python's own `idna` codec (IDNA 2003, via
    django.utils.encoding.punycode), so that codec, not the `idna` package,
    decides here: a domain accepted here is one the send will not fail on.
    """
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise HeaderTextError(DOMAIN_NOT_IDNA, f"domain {domain!r} has no IDNA form ({exc})") from None


def normalize_address(address: str) -> str:
    """Return a bare address (`local@domain`) with its domain in ASCII; raise HeaderTextError if it cannot be."""
    check_header_text(address, what="address")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise HeaderTextError(NOT_AN_ADDRESS, f"{address!r} is not an email address")
    return f"{local}@{idna_domain(domain)}"


def check_mailbox(value: str, *, what: str) -> None:
    """Refuse a mailbox (`addr` or `Name <addr>`) that cannot safely reach a header or the envelope."""
    check_header_text(value, what=what)
    try:
        # What the email backend itself does with the address, at send time.
        sanitize_address(value, settings.DEFAULT_CHARSET)
    except (ValueError, IndexError) as exc:
        if isinstance(exc, UnicodeError):
            raise HeaderTextError(DOMAIN_NOT_IDNA, f"{what}: the domain has no IDNA form ({exc})") from None
        raise HeaderTextError(NOT_AN_ADDRESS, f"{what}: {exc}") from None


def check_header_name(name: str) -> None:
    if not _HEADER_NAME.match(name):
        raise HeaderTextError(BAD_HEADER_NAME, f"header name {name!r} is not printable ASCII without ':'")


class VerifiedEmail(EmailMultiAlternatives):
    """An email whose MIME form was built and verified once, and is sent as verified.

    Django's SMTP backend calls `message()` to serialise; returning the checked
    object means what goes on the wire is what was checked, and the MIME tree is
    not built a second time.
    """

    verified: Message | None = None

    def message(self) -> Message:
        return self.verified if self.verified is not None else super().message()


def build_email(message: OutboxMessage, connection: BaseEmailBackend | None = None) -> EmailMultiAlternatives:
    """Return the Django email for an outbox row, with its fixed Message-ID, verified.

    Raise MessageCannotBeBuilt when the row cannot become a well-formed email:
    the headers read back from the serialised bytes differ from the ones built,
    or the parser found defects in them.
    """
    email = VerifiedEmail(
        subject=message.subject,
        body=message.body_text,
        from_email=message.from_email,
        to=message.to,
        cc=message.cc,
        bcc=message.bcc,
        reply_to=message.reply_to,
        headers={**message.headers, "Message-ID": message.message_id},
        connection=connection,
    )
    if message.body_html:
        email.attach_alternative(message.body_html, "text/html")
    try:
        # The envelope addresses (MAIL FROM / RCPT TO) are not checked here: the
        # SMTP backend sanitises them at send anyway, and outbox_enqueue already
        # ran the same check (check_mailbox) on every address.
        built = email.message()
        if "=?" in message.subject and message.subject.isascii():
            # Django leaves an ASCII subject as it is, and a mail reader would then
            # decode text typed as "=?utf-8?b?...?=" into something else. Encode the
            # whole subject instead: it reads exactly as typed.
            built.replace_header("Subject", Header(message.subject, "utf-8").encode())
        # Exactly the bytes Django's SMTP backend writes after DATA.
        raw = built.as_bytes(linesep="\r\n")
    except Exception as exc:  # whatever Django refuses to build gets the same verdict
        raise MessageCannotBeBuilt(f"{exc.__class__.__name__}: {exc}") from exc
    verify_headers(built, raw)
    _serialise_once(built, raw)
    email.verified = built
    return email


def _serialise_once(built: Message, raw: bytes) -> None:
    # The SMTP backend calls as_bytes(linesep="\r\n") on the message it sends:
    # hand it the verified bytes instead of serialising (the larger half of the
    # MIME cost) a second time. Any other call still serialises.
    serialise = built.as_bytes

    def as_bytes(unixfrom: bool = False, linesep: str = "\n") -> bytes:
        return raw if (not unixfrom and linesep == "\r\n") else serialise(unixfrom=unixfrom, linesep=linesep)

    built.as_bytes = as_bytes


def verify_headers(built: Message, raw: bytes) -> None:
    """Raise MessageCannotBeBuilt unless `raw`'s header block reads back as `built`'s headers.

    Only the header block is parsed (BytesHeaderParser): the body is Django's
    own base64 / quoted-printable and cannot end the headers early.
    """
    parsed = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    if parsed.defects:
        names = ", ".join(defect.__class__.__name__ for defect in parsed.defects)
        raise MessageCannotBeBuilt(f"the serialised headers have defects: {names}")
    expected = [(name.lower(), _readable(value)) for name, value in built.items()]
    found = [(name.lower(), _readable(value)) for name, value in parsed.items()]
    if expected != found:
        missing = [name for name, _ in expected if (name, _) not in found]
        extra = [name for name, _ in found if (name, _) not in expected]
        raise MessageCannotBeBuilt(
            f"the serialised headers differ from the built ones (changed or lost: {missing}; unexpected: {extra})"
        )


def _readable(value: object) -> str:
    # Folding and encoded-word boundaries may change in serialisation; the
    # decoded text may not.
    text = _FOLD.sub("", str(value))
    if "=?" in text:  # decoding is most of the check's cost: only for encoded words
        text = str(make_header(decode_header(text)))
    return _BLANKS.sub(" ", text).strip()
