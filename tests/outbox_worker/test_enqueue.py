import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from outbox_worker.insert import insert_message
from outbox_worker.models import OutboxMessage, OutboxStatus
from outbox_worker.services import OutboxError, outbox_enqueue

EMAIL = {"to": ["ana@example.com"], "subject": "Olá", "body_text": "Corpo"}


@pytest.mark.django_db(transaction=True)
def test_enqueue_refuses_to_run_outside_a_transaction():
    with pytest.raises(OutboxError, match=r"inside transaction\.atomic"):
        outbox_enqueue(**EMAIL)
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_enqueue_stores_a_pending_message_with_a_fixed_message_id(settings):
    settings.DEFAULT_FROM_EMAIL = "Cursos <contato@cursos.com.br>"
    with transaction.atomic():
        message = outbox_enqueue(**EMAIL, reply_to=["suporte@cursos.com.br"], headers={"X-Tag": "a"})

    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    assert message.attempts == 0
    assert message.from_email == "Cursos <contato@cursos.com.br>"
    assert message.message_id.startswith("<") and message.message_id.endswith("@cursos.com.br>")
    assert message.reply_to == ["suporte@cursos.com.br"]
    assert message.headers == {"X-Tag": "a"}


# Every character the header rule refuses, each with what it would break.
FORBIDDEN = {
    "CR": "\r",
    "LF": "\n",
    "NUL": "\x00",
    "SOH": "\x01",
    "TAB": "\t",
    "VT (Python 3.11 folds on it)": "\x0b",
    "FF": "\x0c",
    "FS": "\x1c",
    "GS": "\x1d",
    "RS": "\x1e",
    "US": "\x1f",
    "DEL": "\x7f",
    "NEL": "\x85",
    "C1 (APC)": "\x9f",
    "LINE SEPARATOR": "\u2028",
    "PARAGRAPH SEPARATOR": "\u2029",
}


def _with(field: str, char: str) -> dict:
    hostile = {
        "subject": f"Olá{char}Bcc: vitima@example.com",
        "to": [f'"ana{char}x-evil: sim"@example.com'],
        "cc": [f"Ana{char}Bcc <ana@example.com>"],
        "bcc": [f"ana@exa{char}mple.com"],
        "reply_to": [f"ana{char}@example.com"],
        "from_email": f"Cursos{char} <contato@cursos.com.br>",
        "headers": {"X-Tag": f"a{char}Bcc: vitima@example.com"},
    }
    return {**EMAIL, field: hostile[field]}


@pytest.mark.django_db
@pytest.mark.parametrize("char", FORBIDDEN.values(), ids=FORBIDDEN.keys())
@pytest.mark.parametrize("field", ["subject", "to", "cc", "bcc", "reply_to", "from_email", "headers"])
def test_enqueue_refuses_control_characters_and_separators_in_every_header_value(field, char):
    with pytest.raises(OutboxError, match=r"U\+[0-9A-F]{4}"), transaction.atomic():
        outbox_enqueue(**_with(field, char))
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("domain", ["exa\u202emple.com", "exa\u200emple.com", "x" * 64 + ".com", "exa\ufffdmple.com"])
def test_enqueue_refuses_a_domain_without_an_idna_form(domain):
    with pytest.raises(OutboxError, match="has no IDNA form"), transaction.atomic():
        outbox_enqueue(**{**EMAIL, "to": [f"ana@{domain}"]})
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["X Tag", "X-Tag:", "X-Tàg", "", "X-Tag\n"])
def test_enqueue_refuses_a_header_name_that_is_not_a_field_name(name):
    with pytest.raises(OutboxError, match="header name"), transaction.atomic():
        outbox_enqueue(**EMAIL, headers={name: "a"})


@pytest.mark.django_db
def test_enqueue_refuses_an_address_django_cannot_send_to():
    with pytest.raises(OutboxError, match="to:"), transaction.atomic():
        outbox_enqueue(**{**EMAIL, "to": ["ana@example.com, bia@example.com>"]})


@pytest.mark.django_db
def test_unicode_everywhere_that_has_an_ascii_form_is_accepted(settings):
    settings.DEFAULT_FROM_EMAIL = "Cursos Ação <contato@ação.com.br>"
    with transaction.atomic():
        message = outbox_enqueue(
            to=["joão@exámple.com"],
            cc=["Zoë d'Ávila <zoe@例え.jp>"],
            subject='Matrícula: Excel & Power BI d\'Ana <avançado> "2026"',
            body_text="Corpo",
            headers={"X-Curso": "Ação & reação"},
        )

    # The Message-ID is ASCII (its domain is the From domain's IDNA form).
    assert message.message_id.endswith("@xn--ao-siap.com.br>")
    assert message.to == ["joão@exámple.com"]


@pytest.mark.django_db(transaction=True)
def test_the_same_dedup_key_is_queued_only_once():
    with transaction.atomic():
        outbox_enqueue(**EMAIL, dedup_key="event:1")

    with pytest.raises(IntegrityError), transaction.atomic():
        outbox_enqueue(**EMAIL, dedup_key="event:1")

    assert OutboxMessage.objects.count() == 1


def _stored(pk: int) -> dict:
    row = OutboxMessage.objects.filter(pk=pk).values().get()
    return {name: value for name, value in row.items() if name not in ("id", "message_id", "dedup_key", "updated_at")}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changed",
    [
        {},
        # Every field whose default insert_message reuses, set to something else.
        {
            "status": OutboxStatus.CANCELLED,
            "attempts": 2,
            "interruptions": 1,
            "started_solo": True,
            "solo_interruptions": 1,
            "max_attempts": 3,
            "locked_by": "w",
            "last_error": "x",
            "kind": "k",
            "source": "s",
            "provider_message_id": "p",
            "delivery_status": "delivered",
            "body_html": "<p>h</p>",
            "cc": ["c@example.com"],
            "headers": {"X-A": "1"},
        },
    ],
    ids=["defaults", "every-default-changed"],
)
def test_insert_message_stores_what_save_would(changed):
    """insert_message reuses prepared defaults: a value that differs from its default must still be written."""
    now = timezone.now()

    def build(n: int) -> OutboxMessage:
        return OutboxMessage(
            from_email="a@example.com", to=["b@example.com"], subject="Olá", body_text="Corpo",
            message_id=f"<{n}@example.com>", dedup_key=f"k{n}", available_at=now, created_at=now, **changed,
        )  # fmt: skip

    fast, saved = build(1), build(2)
    insert_message(fast)
    saved.save(force_insert=True)

    assert fast.pk is not None and not fast._state.adding
    assert _stored(fast.pk) == _stored(saved.pk)
    for name, value in changed.items():
        assert _stored(fast.pk)[name] == value
