"""What text may reach an email header, and building an email that is checked before it leaves.

Python 3.11 folds a header on every character `str.splitlines()` splits on
(VT, FF, FS, GS, RS, NEL, U+2028, U+2029), not only CR and LF, and its fix
(`verify_generated_headers`, CVE-2024-6923) came in later releases. Django's
`EmailValidator` accepts control characters inside a quoted local part. So a
header value here is refused if it holds any control character or line or
paragraph separator at all (`header_text_problem`), every domain must have an
ASCII (IDNA) form, and `build_email` parses the bytes it built back and
refuses a message whose headers did not survive the round trip.

Over exactly Django's SMTP backend the worker sends `wire.wire_email`'s bytes
instead: the same bytes written straight from the row, safe without the read-back
(wire.py says why). `build_email` still builds every email for any other
backend and every row the wire writer declines, and gives their verdict.

`check_buildable` gives `build_email`'s verdict at enqueue for a fraction of
its cost: each header is checked alone, exactly as the send checks it, and the
verdict is remembered (the subject, sender and extra headers repeat from one
email to the next); plain recipient addresses and the bodies need no build to
be judged. Anything it cannot judge that way gets the full build.
"""

import functools
import re
from collections.abc import Iterator
from email import policy
from email.errors import HeaderParseError
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import SafeMIMEText, sanitize_address

from .errors import MessageCannotBeBuilt
from .models import OutboxMessage

# C0 controls (tab included), DEL and the C1 controls, and the two Unicode
# separators: together a superset of what str.splitlines() breaks a line on.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field-name: printable ASCII except ":"
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_BLANKS = re.compile(r"[ \t]+")
# A bare address Django writes into a header as it is and any parser reads back
# unchanged: dot-atom letters, digits, "_", "+", "-" before the "@", ASCII DNS
# labels after it (each 1-63 characters: the IDNA codec's only check on ASCII).
# No "=?" (an encoded word's start), no quotes, brackets, commas or spaces.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@{_LABEL}(?:\.{_LABEL})*")

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


def check_no_encoded_word(address: str, *, what: str) -> None:
    """Refuse "=?" in a bare address: an encoded word may not appear in one (RFC 2047, section 5).

    Django's address parser decodes it anyway, so the mail would go to another
    address than the one typed: "=?utf-8?q?ana?=@example.com" is sent to ana@example.com.
    """
    if "=?" in address:
        raise HeaderTextError(
            NOT_AN_ADDRESS, f"{what}: {address!r} holds an encoded word, which is sent as another address"
        )


def normalize_address(address: str) -> str:
    """Return a bare address (`local@domain`) with its domain in ASCII; raise HeaderTextError if it cannot be."""
    check_header_text(address, what="address")
    check_no_encoded_word(address, what="address")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise HeaderTextError(NOT_AN_ADDRESS, f"{address!r} is not an email address")
    return f"{local}@{idna_domain(domain)}"


def is_plain_address(value: str) -> bool:
    """Whether `value` is a bare ASCII address that reaches a header and the envelope exactly as it is."""
    return _PLAIN_ADDRESS.fullmatch(value) is not None


def check_mailbox(value: str, *, what: str) -> None:
    """Refuse a mailbox (`addr` or `Name <addr>`) that cannot safely reach a header or the envelope."""
    check_header_text(value, what=what)
    # The address itself: inside the last <...> of "Name <addr>" (the name may hold encoded words).
    check_no_encoded_word(value.rsplit("<", 1)[-1] if value.endswith(">") else value, what=what)
    if is_plain_address(value):
        return  # sanitize_address accepts every such address unchanged (tests/outbox_worker/test_mime_fast.py)
    try:
        envelope_address(value, settings.DEFAULT_CHARSET)  # what the email backend itself does with it, at send time
    except (ValueError, IndexError) as exc:
        if isinstance(exc, UnicodeError):
            raise HeaderTextError(DOMAIN_NOT_IDNA, f"{what}: the domain has no IDNA form ({exc})") from None
        raise HeaderTextError(NOT_AN_ADDRESS, f"{what}: {exc}") from None


@functools.lru_cache(maxsize=1024)
def envelope_address(value: str, charset: str) -> str:
    """`sanitize_address(value, charset)`, remembered: the address as Django's SMTP backend gives it to MAIL FROM.

    A pure function of its arguments, and a full RFC 5322 parse costing as much
    as an INSERT, while the sender is the same address on almost every email
    (enqueue checks it, sending.py sends from it). An address it refuses
    raises, and is not remembered.
    """
    return sanitize_address(value, charset)


def is_header_name(name: str) -> bool:
    """Whether `name` is an RFC 5322 field-name (printable ASCII without ":"), all of it."""
    return _HEADER_NAME.fullmatch(name) is not None


def check_header_name(name: str) -> None:
    if not is_header_name(name):  # the whole name: `$` alone would let a trailing "\n" through
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
        _encode_lookalike_subject(built, message.subject)
        # Exactly the bytes Django's SMTP backend writes after DATA.
        raw = built.as_bytes(linesep="\r\n")
    except Exception as exc:  # whatever Django refuses to build gets the same verdict
        raise MessageCannotBeBuilt(f"{exc.__class__.__name__}: {exc}") from exc
    verify_headers(built, raw)
    _serialise_once(built, raw)
    email.verified = built
    return email


def _encode_lookalike_subject(built: Message, subject: str) -> None:
    if "=?" in subject and subject.isascii():
        # Django leaves an ASCII subject as it is, and a mail reader would then
        # decode text typed as "=?utf-8?b?...?=" into something else. Encode the
        # whole subject instead: it reads exactly as typed.
        built.replace_header("Subject", Header(subject, "utf-8").encode())


# outbox_enqueue's Message-IDs differ only in their 32 hex digits, which build the
# same way whatever they are: judged (and remembered) as one, per sender domain.
_ONE_MESSAGE_ID = re.compile(r"^<[0-9a-f]{32}(@[^>]*)>$")
_ZEROS = "<" + "0" * 32 + r"\1>"
# Header names Django's EmailMessage.message() takes from the email's own fields, not from its extra headers.
_FROM_FIELDS = {"from", "to", "cc", "reply-to"}


def check_buildable(message: OutboxMessage) -> None:
    """Raise MessageCannotBeBuilt unless `build_email(message)` will succeed; much cheaper than building it.

    The email's headers are checked one by one, each exactly as `build_email`
    checks it inside the whole email (Django sets it, the serialiser folds it,
    the parser must read it back the same; headers do not affect each other),
    and each verdict is remembered. Plain recipient addresses are known to pass
    (`is_plain_address`); the bodies only need to be encodable. With any other
    charset than UTF-8 the whole email is built instead.
    """
    charset = settings.DEFAULT_CHARSET
    if charset.lower() != "utf-8":
        build_email(message)
        return
    for name, value, plain in _header_values(message):
        if plain:
            continue
        problem = _header_problem(name, value, charset)
        if problem is not None:
            raise MessageCannotBeBuilt(problem)
    for body in (message.body_text, message.body_html):
        try:
            body.encode("utf-8")  # what MIMEText does with it; only lone surrogates fail
        except UnicodeError as exc:
            raise MessageCannotBeBuilt(f"{exc.__class__.__name__}: {exc}") from None


def _header_values(message: OutboxMessage) -> Iterator[tuple[str, str, bool]]:
    """Yield (name, value, plain) for each header `build_email` has Django set, as EmailMessage.message() picks them.

    `plain` marks an address list made only of plain addresses. Date and the
    MIME headers are Django's own and always build.
    """
    extra = {**message.headers, "Message-ID": message.message_id}
    yield "Subject", message.subject, False
    yield "From", extra.get("From", message.from_email or settings.DEFAULT_FROM_EMAIL), False
    for name, values in (("To", message.to), ("Cc", message.cc), ("Reply-To", message.reply_to)):
        if name in extra:
            yield name, extra[name], False
        elif values:
            yield name, ", ".join(values), all(is_plain_address(value) for value in values)
    for name, value in extra.items():
        if name.lower() not in _FROM_FIELDS:
            yield name, _ONE_MESSAGE_ID.sub(_ZEROS, value) if name == "Message-ID" else value, False


@functools.lru_cache(maxsize=1024)
def _header_problem(name: str, value: str, charset: str) -> str | None:
    """Why one header cannot be built and verified as `build_email` does it, or None; remembered (a pure function)."""
    try:
        _build_header(name, value, charset)
    except MessageCannotBeBuilt as exc:
        return str(exc)
    return None


def _build_header(name: str, value: str, charset: str) -> None:
    probe = SafeMIMEText("", "plain", charset)
    try:
        probe[name] = value  # Django's own checks and encoding, as in EmailMessage.message()
        if name == "Subject":
            _encode_lookalike_subject(probe, value)
        raw = probe.as_bytes(linesep="\r\n")
    except Exception as exc:  # the same verdict as build_email's
        raise MessageCannotBeBuilt(f"{exc.__class__.__name__}: {exc}") from exc
    verify_headers(probe, raw)


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
        try:
            text = str(make_header(decode_header(text)))
        except (HeaderParseError, LookupError, ValueError):
            # Text that only looks like an encoded word (an unknown charset, bad
            # base64, bytes its charset cannot decode) is compared as it stands,
            # which is stricter, instead of escaping as an unexpected exception.
            pass
    return _BLANKS.sub(" ", text).strip()
