"""check_buildable() gives build_email()'s verdict without building the email: same answer, every row.

outbox_enqueue refuses a row with check_buildable; the send builds it with
build_email. If the two ever disagreed, a row accepted at enqueue could fail at
send time. These properties compare them on hostile rows (the rows bypass
outbox_enqueue's header rule, so every refusal path of build_email is reached).
"""

import pytest
from django.core.mail.message import sanitize_address
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox_worker.mime import (
    _PLAIN_ADDRESS,
    MessageCannotBeBuilt,
    _header_values,
    build_email,
    check_buildable,
    check_mailbox,
    is_plain_address,
)
from outbox_worker.models import OutboxMessage
from outbox_worker.services import OutboxError, outbox_enqueue
from tests.outbox_worker.test_mime import MALFORMED, row

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PLAIN = st.from_regex(_PLAIN_ADDRESS, fullmatch=True)
# Text that breaks headers: line and paragraph separators, controls, lone
# surrogates, encoded-word lookalikes (valid, unknown charset, bad base64).
NASTY = st.sampled_from(
    ["\n", "\r", "\x0b", "\x1c", "\x85", "\u2028", "\t", "\ud800", "=?", "?=", "=?utf-8?b?SGk=?=",
     "=?x-nope?q?a?=", "=?utf-8?b?###?=", ",", ";", ":", "<", ">", '"', "@", " ", "  ", "ç", "例", "\u202e"]
)  # fmt: skip
TEXT = st.lists(st.one_of(NASTY, st.text(max_size=12)), max_size=8).map("".join)
MAILBOX = st.one_of(
    PLAIN,
    st.builds(lambda name, address: f"{name} <{address}>", TEXT, PLAIN),
    st.builds(
        lambda local, domain: f"{local}@{domain}", TEXT, st.sampled_from(["example.com", "exámple.com", "例え.jp"])
    ),
    st.sampled_from(["Zoë d'Ávila <zoe@exámple.com>", '"Ana, Bia" <a@example.com>', "a@exa\u2028mple.com", "x"]),
)
HEADER_NAME = st.one_of(
    st.sampled_from(["X-Tag", "Reply-To", "To", "Cc", "From", "Date", "Subject", "message-id"]), TEXT
)
ROWS = st.fixed_dictionaries(
    {
        "subject": st.one_of(TEXT, st.text(min_size=60, max_size=300)),
        "from_email": MAILBOX,
        "to": st.lists(MAILBOX, min_size=1, max_size=4),
        "cc": st.lists(MAILBOX, max_size=2),
        "reply_to": st.lists(MAILBOX, max_size=2),
        "headers": st.dictionaries(HEADER_NAME, TEXT, max_size=3),
        "body_text": TEXT,
        "body_html": st.one_of(st.just(""), TEXT),
    }
)


def verdict(check, message: OutboxMessage) -> bool:
    try:
        check(message)
    except MessageCannotBeBuilt:
        return False
    return True


@PROPERTY
@given(changes=ROWS)
def test_check_buildable_and_build_email_agree_on_every_row(changes):
    message = row(**changes)

    assert verdict(check_buildable, message) == verdict(build_email, message), changes


@pytest.mark.parametrize("changes", MALFORMED.values(), ids=MALFORMED.keys())
def test_check_buildable_refuses_every_known_malformed_row(changes):
    with pytest.raises(MessageCannotBeBuilt):
        check_buildable(row(**changes))


@PROPERTY
@given(addresses=st.lists(PLAIN, min_size=1, max_size=12))
def test_plain_addresses_reach_the_envelope_and_the_headers_unchanged(addresses):
    for address in addresses:
        assert is_plain_address(address)
        assert sanitize_address(address, "utf-8") == address
    # Many of them, long ones too: the To header folds and must still read back the same.
    build_email(row(to=addresses, cc=addresses[:3], reply_to=addresses[-2:]))


@PROPERTY
@given(changes=ROWS)
def test_the_headers_judged_are_the_headers_django_sets(changes):
    message = row(**changes)
    try:
        built = build_email(message).message()
    except MessageCannotBeBuilt:
        return
    django_own = {"content-type", "mime-version", "content-transfer-encoding", "date"}
    expected = [name for name in built.keys() if name.lower() not in django_own]
    judged = [name for name, _value, _plain in _header_values(message)]
    if not any(name.lower() == "date" for name in message.headers):
        assert judged == expected
    else:  # a Date of the caller's replaces Django's: it is judged like any extra header
        assert [name for name in judged if name.lower() != "date"] == [
            name for name in expected if name.lower() != "date"
        ]


def test_a_header_that_only_looks_like_an_encoded_word_is_compared_as_typed():
    # An unknown charset or bad base64 made the check itself raise (LookupError,
    # HeaderParseError) instead of giving a verdict; now the text is compared as it stands.
    for value in ("=?x-nope?q?abc?=", "=?utf-8?b?###?="):
        message = row(headers={"X-Tag": value}, to=[f"{value}@example.com"])
        check_buildable(message)
        assert build_email(message).message()["X-Tag"] == value


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["=?x-nope?q?abc?=@example.com", "Ana <=?utf-8?q?ana?=@example.com>"])
def test_enqueue_refuses_an_encoded_word_in_an_address(address):
    # Django's parser decodes it: the first would be sent to abc@example.com.
    with pytest.raises(OutboxError, match="encoded word"), transaction.atomic():
        outbox_enqueue(to=[address], subject="Olá", body_text="Corpo")


def test_an_encoded_word_in_a_display_name_is_not_an_address_problem():
    check_mailbox("=?utf-8?q?Ana?= <ana@example.com>", what="to")


@pytest.mark.django_db
def test_enqueue_refuses_a_body_that_cannot_be_encoded():
    with pytest.raises(OutboxError, match="cannot be built"), transaction.atomic():
        outbox_enqueue(to=["ana@example.com"], subject="Olá", body_text="Corpo \ud800")
    assert not OutboxMessage.objects.exists()


def test_the_from_header_of_a_row_without_a_sender_is_the_default(settings):
    settings.DEFAULT_FROM_EMAIL = "Cursos <contato@cursos.com.br>"
    message_id = "<" + "ab" * 16 + "@cursos.com.br>"
    headers = {name: value for name, value, _plain in _header_values(row(from_email="", message_id=message_id))}

    assert headers["From"] == "Cursos <contato@cursos.com.br>"
    # Judged (and remembered) as any outbox Message-ID of that domain.
    assert headers["Message-ID"] == "<" + "0" * 32 + "@cursos.com.br>"
