"""build_email() checks the bytes it built: a malformed email never reaches the wire.

The rows here bypass outbox_enqueue (as a row written before its checks, or
by a raw INSERT, would): this is the last line of defence, not the first.
"""

from email import message_from_bytes, policy

import pytest
from django.utils import timezone

from outbox_worker.mime import MessageCannotBeBuilt, build_email, header_text_problem
from outbox_worker.models import AttemptOutcome, OutboxMessage, OutboxStatus

ROW = {
    "from_email": "Cursos <nao-responda@cursos.com.br>",
    "to": ["ana@example.com"],
    "cc": [],
    "bcc": [],
    "reply_to": [],
    "subject": "Matrícula confirmada",
    "body_text": "Olá",
    "body_html": "<p>Olá</p>",
    "headers": {},
    "message_id": "<0123456789abcdef@cursos.com.br>",
}

# The attacks, written straight into a row.
MALFORMED = {
    "VT in a quoted local part ends the header block": {"to": ['"a\x0bb"@example.com']},
    "VT + fake header in a local part": {"to": ['"x\x0bx-evil\\ :pwned"@example.com']},
    "FS in a quoted local part": {"to": ['"a\x1cb"@example.com']},
    "NEL in a local part": {"to": ['"a\x85b"@example.com']},
    "LINE SEPARATOR in a local part": {"to": ['"a\u2028b"@example.com']},
    "VT in an ASCII subject": {"subject": "Oi\x0bBcc: vitima@example.com"},
    "VT in a display name": {"to": ['"Ana\x0bBcc: x" <a@example.com>']},
    "VT in an extra header": {"headers": {"X-Tag": "a\x0bBcc: c"}},
    "a domain with no IDNA form": {"to": ["a@exa\u2028mple.com"]},
    "a header name with a space": {"headers": {"X Tag": "a"}},
}


def row(**changes) -> OutboxMessage:
    return OutboxMessage(**{**ROW, **changes})


@pytest.mark.parametrize("changes", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_row_that_would_make_a_malformed_email_cannot_be_built(changes):
    with pytest.raises(MessageCannotBeBuilt):
        build_email(row(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"subject": "Matrícula confirmada: Excel & Power BI d'Ana " + "ação " * 40},
        {"to": ["Zoë d'Ávila <zoe@exámple.com>"], "reply_to": ["suporte@例え.jp"]},
        {"headers": {"X-Curso": "Ação & <reação>"}},
    ],
)
def test_a_well_formed_row_builds_and_sends_the_bytes_that_were_checked(changes):
    email = build_email(row(**changes))

    mime = email.message()
    # The send serialises the same way; it gets the verified bytes, not a fresh copy.
    assert mime.as_bytes(linesep="\r\n") is mime.as_bytes(linesep="\r\n")
    assert mime["Message-ID"] == ROW["message_id"]


@pytest.mark.parametrize("subject", ["=?utf-8?b?SGk=?=", "Oferta =?utf-8?q?Bcc:_x?= ok", "a =? b ?= c"])
def test_an_ascii_subject_that_looks_like_an_encoded_word_reads_as_typed(subject):
    raw = build_email(row(subject=subject)).message().as_bytes(linesep="\r\n")

    assert message_from_bytes(raw, policy=policy.default)["Subject"] == subject


def test_the_header_rule_names_what_it_refuses():
    assert header_text_problem("Ana Lúcia d'Ávila & <Co> \u202e") is None
    assert header_text_problem("a\x0bb") == "control_character"
    assert header_text_problem("a\u2029b") == "line_separator"


@pytest.mark.django_db
def test_the_worker_fails_such_a_row_permanently_and_sends_nothing(make_worker, smtp_server):
    now = timezone.now()
    message = OutboxMessage.objects.create(
        **{**ROW, "to": ['"x\x0bx-evil\\ :pwned"@example.com']},
        dedup_key="legacy",
        max_attempts=5,
        available_at=now,
        created_at=now,
    )

    make_worker().run()

    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    [attempt] = message.delivery_attempts.all()
    assert attempt.outcome == AttemptOutcome.PERMANENT
    assert "MessageCannotBeBuilt" in attempt.error and "defects" in attempt.error
    assert smtp_server.handler.received == []
