"""wire_email() writes the bytes build_email() would have Django write, or declines and lets build_email() decide.

The rows here bypass outbox_enqueue (every refusal path of build_email is
reached). Only the MIME boundary and the Date may differ: both are drawn or
read from the clock at build time.
"""

import re
from email import policy
from email.parser import BytesHeaderParser

import pytest
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.core.mail.backends.smtp import EmailBackend
from django.core.mail.message import forbid_multi_line_headers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox_worker.delivery import email_for
from outbox_worker.mime import _HEADER_NAME, MessageCannotBeBuilt, build_email
from outbox_worker.models import OutboxStatus
from outbox_worker.sending import send_email
from outbox_worker.wire import (
    _GENERATOR_POLICY,
    _ONE_LINE_LIMIT,
    WireEmail,
    _field,
    _folded_field,
    _one_field,
    wire_email,
)
from tests.factories import enqueue_messages
from tests.outbox_worker.test_mime import row
from tests.outbox_worker.test_mime_fast import MAILBOX, NASTY, PLAIN

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What makes Django's output change shape: line ends of every kind, lines over
# 998 bytes (quoted-printable), non-ASCII and non-BMP text, trailing blanks,
# "=" and "--" (QP and boundaries), encoded-word lookalikes.
PIECES = st.sampled_from(
    ["\r\n", "\n", "\r", "\n\r", " ", "  \n", "\t", "a" * 999, "é" * 500, "😀", "ç", "例", "=", "=?utf-8?q?x?=",
     "--", "From ", ".", "\x0c", "\u2028", "\x85", "\x00"]
)  # fmt: skip
BODY = st.lists(st.one_of(PIECES, st.text(max_size=20)), max_size=10).map("".join)
TEXT = st.lists(st.one_of(NASTY, PIECES, st.text(max_size=12)), max_size=8).map("".join)
SUBJECT = st.one_of(
    TEXT,
    st.text(min_size=60, max_size=300),
    st.lists(st.sampled_from(["Matrícula", "confirmada", "=?utf-8?b?SGk=?=", "Excel", "&", "😀", "x" * 80])).map(
        " ".join
    ),
)
HEADER_NAME = st.one_of(
    st.sampled_from(["X-Tag", "List-Unsubscribe", "Reply-To", "To", "Cc", "From", "Date", "date", "Subject",
                     "message-id", "Message-ID", "Content-Type", "MIME-Version", "X Tag", "X:Tag"]),
    st.from_regex(_HEADER_NAME, fullmatch=True),
)  # fmt: skip
# Text and mailboxes outbox_enqueue takes, mixed into the hostile rows so that some of them build.
WORDS = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), max_size=40)
GOOD_BODY = st.lists(st.one_of(PIECES, st.text(st.characters(codec="utf-8"), max_size=20)), max_size=10).map("".join)
NAME = st.text(st.sampled_from("AnaZoëÁvilaLúciaç '.-"), min_size=1, max_size=30).map(str.strip).filter(bool)
GOOD_MAILBOX = st.one_of(PLAIN, st.builds(lambda name, address: f"{name} <{address}>", NAME, PLAIN))
# Hostile rows: about a third of them build (the wire bytes are compared), the rest must be declined.
MIXED_MAILBOX = st.one_of(*[GOOD_MAILBOX] * 5, MAILBOX)
MIXED_TEXT = st.one_of(WORDS, WORDS, TEXT)
ROWS = st.fixed_dictionaries(
    {
        "subject": st.one_of(WORDS, WORDS, SUBJECT),
        "from_email": MIXED_MAILBOX,
        "to": st.lists(MIXED_MAILBOX, min_size=1, max_size=4),
        "cc": st.lists(MIXED_MAILBOX, max_size=2),
        "bcc": st.lists(PLAIN, max_size=2),
        "reply_to": st.lists(MIXED_MAILBOX, max_size=2),
        "headers": st.dictionaries(
            HEADER_NAME, st.one_of(WORDS, MIXED_TEXT, st.text(min_size=70, max_size=200)), max_size=3
        ),
        "body_text": BODY,
        "body_html": st.one_of(st.just(""), BODY),
    }
)

# Rows as outbox_enqueue takes them: the wire writer must write every one of these itself.
GOOD_ROWS = st.fixed_dictionaries(
    {
        "subject": st.one_of(WORDS, st.lists(WORDS, max_size=8).map(" ".join)),
        "from_email": GOOD_MAILBOX,
        "to": st.lists(GOOD_MAILBOX, min_size=1, max_size=4),
        "cc": st.lists(GOOD_MAILBOX, max_size=2),
        "reply_to": st.lists(GOOD_MAILBOX, max_size=2),
        "headers": st.dictionaries(st.sampled_from(["X-Tag", "List-Unsubscribe", "X-Curso"]), WORDS, max_size=2),
        "body_text": GOOD_BODY,
        "body_html": st.one_of(st.just(""), GOOD_BODY),
    }
)

_BOUNDARY = re.compile(rb"={15}[0-9]{19}==")
_DATE = re.compile(rb"(?m)^Date: [^\r\n]*\r\n")


def normalised(data: bytes) -> bytes:
    return _DATE.sub(b"Date: (the send time)\r\n", _BOUNDARY.sub(b"(boundary)", data), count=1)


def django_bytes(message) -> tuple[EmailMultiAlternatives, bytes]:
    email = build_email(message)
    return email, email.message().as_bytes(linesep="\r\n")


@PROPERTY
@given(changes=ROWS)
def test_the_wire_bytes_are_djangos_or_the_wire_writer_declines(changes):
    message = row(**changes)
    wire = wire_email(message)
    try:
        email, expected = django_bytes(message)
    except MessageCannotBeBuilt:
        assert wire is None, "a row build_email refuses must be refused the same way"
        return
    if wire is not None:
        assert normalised(wire.data) == normalised(expected)
        assert wire.recipients == email.recipients() and wire.from_email == email.from_email


@PROPERTY
@given(changes=GOOD_ROWS)
def test_every_row_outbox_enqueue_accepts_is_written_by_the_wire_writer(changes):
    message = row(**changes)
    _email, expected = django_bytes(message)
    wire = wire_email(message)

    assert wire is not None
    assert normalised(wire.data) == normalised(expected)


PRINTABLE_WORD = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)


@PROPERTY
@given(
    name=st.one_of(st.sampled_from(["To", "Message-ID", "Date", "X-Tag"]), st.from_regex(_HEADER_NAME, fullmatch=True)),
    value=st.lists(PRINTABLE_WORD, min_size=1, max_size=8).map(" ".join),
)
def test_a_short_plain_value_is_written_as_the_generator_would_fold_it(name, value):
    # The shortcut in _field: printable ASCII words, single spaces, fitting in one line.
    expected = _GENERATOR_POLICY.fold(name, forbid_multi_line_headers(name, value, "utf-8")[1])
    if len(name) + 2 + len(value) <= _ONE_LINE_LIMIT and name.lower() != "subject":
        assert _field(name, value, subject=False) == expected == f"{name}: {value}\r\n"
    assert _folded_field.__wrapped__(name, value, False) == expected


def test_the_three_shapes_are_written_the_way_django_writes_them():
    for changes in ({"body_html": ""}, {}, {"body_text": ""}, {"body_text": "", "body_html": ""}):
        message = row(**changes)
        assert normalised(wire_email(message).data) == normalised(django_bytes(message)[1]), changes


@pytest.mark.parametrize(
    "changes",
    [
        {"headers": {"Content-Type": "text/html"}},
        {"headers": {"mime-version": "2.0"}},
        {"headers": {"X-Count": 3}},
        {"subject": "Oi\tvoce"},
    ],
)
def test_the_wire_writer_declines_what_it_was_not_written_for_and_django_still_builds_it(changes):
    message = row(**changes)

    assert wire_email(message) is None
    assert isinstance(email_for(message, EmailBackend()), EmailMultiAlternatives)


def test_another_default_charset_is_left_to_django(settings):
    settings.DEFAULT_CHARSET = "UTF-8"  # Django's utf-8 body rules key on the lowercase spelling

    assert wire_email(row()) is None


def test_a_body_that_cannot_be_encoded_is_refused_by_build_email():
    message = row(body_text="Olá \ud800")

    assert wire_email(message) is None
    with pytest.raises(MessageCannotBeBuilt):
        email_for(message, EmailBackend())


def test_only_exactly_djangos_smtp_backend_gets_the_wire_bytes():
    class Subclass(EmailBackend):
        pass

    replaced = EmailBackend()
    replaced.send_messages = lambda messages: len(messages)
    assert isinstance(email_for(row(), EmailBackend()), WireEmail)
    for backend in (LocmemBackend(), Subclass(), replaced):
        email = email_for(row(), backend)
        assert isinstance(email, EmailMultiAlternatives) and email.metadata == {"outbox_id": "None"}
    with pytest.raises(TypeError):
        send_email(LocmemBackend(), wire_email(row()))


# Every way a header could be cut short and a new one started: each line break
# str.splitlines() knows, and an encoded CRLF inside an encoded word.
BREAKS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
INJECTED = [f"x{br}Bcc: evil@example.com{br}X-Evil: 1" for br in BREAKS] + ["=?utf-8?q?x=0D=0AX-Evil:_1?="]
FIELDS = {
    "subject": lambda text: {"subject": text},
    "from display name": lambda text: {"from_email": f'"{text}" <from@example.com>'},
    "to display name": lambda text: {"to": [f'"{text}" <ana@example.com>']},
    "to local part": lambda text: {"to": [f'"{text}"@example.com']},
    "cc": lambda text: {"cc": [f'"{text}" <cc@example.com>']},
    "reply_to": lambda text: {"reply_to": [f"{text} <r@example.com>"]},
    "header value": lambda text: {"headers": {"X-Tag": text}},
    "header name": lambda text: {"headers": {f"X-Tag{text}": "v"}},
    "message_id": lambda text: {"message_id": f"<{text}@cursos.com.br>"},
    "body_text": lambda text: {"body_text": text + "\r\n\r\nX-Evil: 1"},
    "body_html": lambda text: {"body_html": text},
}
EXPECTED_HEADERS = {"content-type", "mime-version", "content-transfer-encoding", "subject", "from", "to", "cc",
                    "reply-to", "date", "message-id", "x-tag"}  # fmt: skip


@pytest.mark.parametrize("field", FIELDS)
def test_no_field_can_add_a_header_to_the_bytes_sent(field, backend, smtp_server):
    sent = 0
    for text in INJECTED:
        try:
            email = email_for(row(**FIELDS[field](text)), backend)
        except MessageCannotBeBuilt:
            continue  # refused: nothing is sent
        except ValueError:
            continue  # the envelope address is refused by the backend's own parse
        if not text.startswith("=?"):
            # A line break in a header value never reaches the wire writer.
            assert not isinstance(email, WireEmail) or field.startswith("body"), text
        try:
            assert send_email(backend, email)
        except ValueError:
            continue  # Django's SMTP backend refuses the envelope address
        sent += 1
    assert sent == len(smtp_server.handler.received)
    for received in smtp_server.handler.received:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(received.data)
        assert not headers.defects
        assert {name.lower() for name in headers.keys()} <= EXPECTED_HEADERS, received.data
        assert received.rcpt_tos in (["ana@example.com"], ["ana@example.com", "cc@example.com"]), received.rcpt_tos


@pytest.mark.parametrize(
    "folded",
    ["X-Tag: a\r\nBcc: x\r\n", "X-Tag: a\nBcc: x\r\n", "X-Tag: a\rBcc: x\r\n", "X-Tag: a\r\n \r\n", "Bcc: x\r\n",
     "X-Tag: a", "X-Tag: é\r\n", "X-Tag: a\r\n\r\nX-Evil: 1\r\n"],
)  # fmt: skip
def test_a_folded_value_that_is_not_one_field_is_declined(folded):
    # The second guard behind the line-break check: a field whose line breaks do not all
    # start a continuation line is never written.
    assert not _one_field("X-Tag", folded)
    assert _one_field("X-Tag", "X-Tag: a\r\n b\r\n\tc\r\n")


@pytest.mark.django_db
def test_the_worker_sends_the_wire_bytes_over_djangos_smtp_backend(make_worker, smtp_server, monkeypatch):
    def no_django_build(*args, **kwargs):
        raise AssertionError("the row should not have been built through Django")

    monkeypatch.setattr("outbox_worker.delivery.build_email", no_django_build)
    [message] = enqueue_messages(1, body_html="<p>Olá</p>", cc=["Zoë <zoe@exämple.com>"], bcc=["b@example.com"])

    make_worker().run()

    [received] = smtp_server.handler.received
    assert normalised(received.data) == normalised(django_bytes(message)[1])
    assert received.mail_from == message.from_email.rsplit("<", 1)[-1].rstrip(">")
    assert received.rcpt_tos == ["aluno0@example.com", "zoe@xn--exmple-cua.com", "b@example.com"]
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
