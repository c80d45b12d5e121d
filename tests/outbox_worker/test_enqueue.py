import pytest
from django.db import IntegrityError, transaction

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


@pytest.mark.django_db
@pytest.mark.parametrize(
    "field,value",
    [
        ("subject", "Olá\r\nBcc: vitima@example.com"),
        ("to", ["ana@example.com\nBcc: vitima@example.com"]),
        ("headers", {"X-Tag": "a\r\nBcc: vitima@example.com"}),
    ],
)
def test_enqueue_rejects_line_breaks_in_header_values(field, value):
    with pytest.raises(OutboxError, match="line breaks"), transaction.atomic():
        outbox_enqueue(**{**EMAIL, field: value})
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_same_dedup_key_is_queued_only_once():
    with transaction.atomic():
        outbox_enqueue(**EMAIL, dedup_key="event:1")

    with pytest.raises(IntegrityError), transaction.atomic():
        outbox_enqueue(**EMAIL, dedup_key="event:1")

    assert OutboxMessage.objects.count() == 1
