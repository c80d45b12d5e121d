"""The bytes Django's SMTP backend sends after DATA, written straight from an outbox row.

Building the email through Django (`mime.build_email`: EmailMessage.message(),
the generator, then parsing the header block back) was about half of the
sender's CPU per email. The outbox makes only three shapes of email: text/plain;
multipart/alternative with a text/plain and a text/html part; and the same with
only the text/html part (an empty text body). `wire_email` writes those shapes
itself, byte for byte as `build_email(row).message().as_bytes(linesep="\\r\\n")`
would, apart from the random MIME boundary and the Date (the send's own time,
as Django gives it). tests/outbox_worker/test_wire.py checks that equality
over hostile rows with Hypothesis.

It declines (returns None) whatever it was not written for, and the caller
then builds the email through Django as before, which also gives the verdict
on a row that cannot be built: a DEFAULT_CHARSET other than "utf-8", extra
headers that Django's MIME classes own (Content-Type, MIME-Version,
Content-Transfer-Encoding), a header value that is not text, holds any
control character or line separator, or that Django's own header encoding
refuses, a header name that is not an RFC 5322 field-name, a body that is not
encodable, or anything unexpected.

Why no parser read-back (mime.verify_headers) is needed here: header
injection needs a line break inside a value that is not followed by
whitespace. (1) Every value that reaches this module is free of every
character str.splitlines() breaks on (mime.header_text_problem: all C0 and C1
controls, DEL, U+2028, U+2029): Python's folder (the CVE-2024-6923 route)
has nothing to split a new line on. (2) Each value is encoded by Django's own
`forbid_multi_line_headers` and folded by the very policy call the generator
makes, so non-ASCII text becomes RFC 2047 encoded words (base64 or Q, no
line breaks). (3) Each folded field is then checked on its own
(`_one_field`): it starts with its own name and a colon, and every line
break inside it is CRLF followed by a space or tab and some text, so the
field stays one field and cannot end the header block. The bodies come
after the blank line and are 7bit, 8bit or quoted-printable text as Django
writes them; a part boundary is never a line of a body.
"""

import functools
import random
import re
import sys
from dataclasses import dataclass
from email import policy, quoprimime
from email.header import Header
from email.utils import formatdate

from django.conf import settings
from django.core.mail.message import RFC5322_EMAIL_LINE_LENGTH_LIMIT, forbid_multi_line_headers

from .mime import header_text_problem, is_header_name
from .models import OutboxMessage

# What the email generator does with every header value (EmailMessage.message() serialised with linesep CRLF).
_GENERATOR_POLICY = policy.compat32.clone(linesep="\r\n")
# A value the generator writes exactly as it is when "Name: value" fits in 78 characters
# (tests/outbox_worker/test_wire.py): printable ASCII words with single spaces between them.
_ONE_LINE_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*")
_ONE_LINE_LIMIT = 78
# Headers Django's MIME classes write themselves; a second copy from the row is not for this module.
_MIME_OWN = {"content-type", "mime-version", "content-transfer-encoding"}
# Header names EmailMessage.message() takes from the email's fields, not from its extra headers.
_FROM_FIELDS = {"from", "to", "cc", "reply-to"}
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")  # the generator writes each of them as CRLF
_CONTINUATION = re.compile(r"\r\n[ \t]+\S")


@dataclass(frozen=True)
class WireEmail:
    """An email as Django's SMTP backend hands it to smtplib: envelope sender, recipients, bytes."""

    from_email: str
    recipients: list[str]
    data: bytes


def wire_email(message: OutboxMessage) -> WireEmail | None:
    """Return `message` ready for Django's SMTP backend, or None where `mime.build_email` must build it."""
    if settings.DEFAULT_CHARSET != "utf-8":  # Django's utf-8 body rules key on this exact spelling
        return None
    try:
        data = _serialise(message)
    except Exception:  # noqa: BLE001 - anything unforeseen is Django's to build and judge
        return None
    if data is None:
        return None
    return WireEmail(
        from_email=message.from_email or settings.DEFAULT_FROM_EMAIL,
        recipients=[address for address in (*message.to, *message.cc, *message.bcc) if address],
        data=data,
    )


def _serialise(message: OutboxMessage) -> bytes | None:
    headers = _header_block(message)
    if headers is None:
        return None
    text = _text_part(message.body_text, "plain")
    if not message.body_html:
        if text is None:
            return None
        part_headers, body = text
        return b"".join((part_headers, headers, b"\r\n", body))
    html = _text_part(message.body_html, "html")
    if html is None or (message.body_text and text is None):
        return None
    # EmailMultiAlternatives leaves the text/plain part out when the text body is empty.
    parts = [b"".join((part[0], b"\r\n", part[1])) for part in ((text, html) if message.body_text else (html,))]
    boundary = _boundary(parts).encode("ascii")
    top = b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\nMIME-Version: 1.0\r\n'
    dash_boundary = b"--" + boundary
    body = b"".join(
        (dash_boundary, b"\r\n", (b"\r\n" + dash_boundary + b"\r\n").join(parts), b"\r\n", dash_boundary, b"--\r\n")
    )
    return b"".join((top, headers, b"\r\n", body))


def _header_block(message: OutboxMessage) -> bytes | None:
    """The header fields after Django's MIME headers, in EmailMessage.message()'s order, or None to decline."""
    extra = {**message.headers, "Message-ID": message.message_id}
    names = [name.lower() for name in extra]
    if _MIME_OWN.intersection(names):
        return None
    fields = [
        ("Subject", message.subject),
        ("From", extra.get("From", message.from_email or settings.DEFAULT_FROM_EMAIL)),
    ]
    for name, values in (("To", message.to), ("Cc", message.cc), ("Reply-To", message.reply_to)):
        if name in extra:
            fields.append((name, extra[name]))
        elif values:
            fields.append((name, ", ".join(str(value) for value in values)))
    if "date" not in names:
        fields.append(("Date", formatdate(localtime=settings.EMAIL_USE_LOCALTIME)))
    fields.extend((name, value) for name, value in extra.items() if name.lower() not in _FROM_FIELDS)
    lines = []
    for index, (name, value) in enumerate(fields):
        if not isinstance(value, str):
            return None
        line = _field(name, value, subject=index == 0)
        if line is None:
            return None
        lines.append(line)
    return "".join(lines).encode("ascii")


def _field(name: str, value: str, *, subject: bool) -> str | None:
    # Most values of an outbox email (the address, the Message-ID, the Date) are
    # short ASCII that Django and the generator leave as they are; a subject never is
    # (Django re-encodes it), and the rest repeats from one email to the next.
    if (
        len(name) + 2 + len(value) <= _ONE_LINE_LIMIT
        and name.lower() != "subject"
        and _ONE_LINE_VALUE.fullmatch(value)
        and is_header_name(name)
    ):
        return f"{name}: {value}\r\n"
    return _folded_field(name, value, subject)


@functools.lru_cache(maxsize=2048)
def _folded_field(name: str, value: str, subject: bool) -> str | None:
    """One header field as Django sets it and the generator folds it, or None; a pure function, remembered."""
    if not is_header_name(name) or header_text_problem(value) is not None:
        return None
    try:
        _name, encoded = forbid_multi_line_headers(name, value, "utf-8")
        if subject and "=?" in value and value.isascii():
            encoded = Header(value, "utf-8").encode()  # as mime._encode_lookalike_subject
        folded = _GENERATOR_POLICY.fold(name, encoded)
    except Exception:  # noqa: BLE001 - what Django refuses, build_email refuses with its own words
        return None
    return folded if _one_field(name, folded) else None


def _one_field(name: str, folded: str) -> bool:
    """Whether `folded` is one header field named `name`: every line break in it starts a continuation line."""
    if not folded.isascii() or not folded.startswith(f"{name}:") or not folded.endswith("\r\n"):
        return False
    inner = folded[:-2]
    breaks = inner.count("\r\n")
    return inner.count("\r") == inner.count("\n") == breaks == len(_CONTINUATION.findall(inner))


def _text_part(text: str, subtype: str) -> tuple[bytes, bytes] | None:
    """(MIME headers, body) of a text part as Django's SafeMIMEText writes it, or None if `text` cannot be encoded."""
    try:
        data = text.encode("utf-8")
    except UnicodeError:
        return None
    if len(data) > RFC5322_EMAIL_LINE_LENGTH_LIMIT and any(
        len(line.encode("utf-8")) > RFC5322_EMAIL_LINE_LENGTH_LIMIT for line in text.splitlines()
    ):
        # Django switches to quoted-printable to shorten the long lines; the
        # codec works on the UTF-8 bytes, one code point each (latin-1), as email.charset does.
        encoding, data = "quoted-printable", quoprimime.body_encode(data.decode("latin-1")).encode("ascii")
    else:
        encoding = "7bit" if data.isascii() else "8bit"
    headers = f'Content-Type: text/{subtype}; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
    headers += f"Content-Transfer-Encoding: {encoding}\r\n"
    return headers.encode("ascii"), _LINE_ENDS.sub(b"\r\n", data)


def _boundary(parts: list[bytes]) -> str:
    # The email package's own shape ("=" * 15, 19 digits, "=="), so the
    # Content-Type header folds the same; drawn again in the unlikely case
    # that a part holds it.
    while True:
        boundary = f"==============={random.randrange(sys.maxsize):019d}=="
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary
