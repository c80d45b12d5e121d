"""Header injection cannot reach an email: checked on the message a real SMTP server received."""

from email.header import decode_header, make_header

import pytest
from rest_framework.test import APIClient

from backend.enrollments.services import enrollment_create
from outbox_worker.worker import OutboxWorker
from tests.factories import make_product

pytestmark = pytest.mark.django_db(transaction=True)

# What Django puts on every confirmation, and nothing else.
EXPECTED_HEADERS = ["Content-Type", "MIME-Version", "Subject", "From", "To", "Date", "Message-ID"]


def deliver(smtp_backend_factory) -> None:
    OutboxWorker(once=True, connection_factory=smtp_backend_factory).run()


def test_line_breaks_in_names_never_become_headers(smtp_server, smtp_backend_factory):
    # A product name typed with a line break (admin, shell, import) and a
    # student name carrying an injection attempt, past the API's own check.
    product = make_product(name="Curso de Python\r\nBcc: intruso@evil.example")
    enrollment_create(
        product=product, name="Ana\r\nX-Injected: sim\nBcc: intruso@evil.example", email="ana@example.com"
    )

    deliver(smtp_backend_factory)

    [received] = smtp_server.handler.wait_for(1)
    message = received.message
    assert received.rcpt_tos == ["ana@example.com"]
    assert message.keys() == EXPECTED_HEADERS
    assert message["To"] == "ana@example.com"
    # One header, folded over lines as RFC 5322 allows; decoded, it is one line of text.
    assert str(make_header(decode_header(message["Subject"]))) == (
        "Matrícula confirmada: Curso de Python Bcc: intruso@evil.example"
    )
    text = next(part for part in message.walk() if part.get_content_type() == "text/plain")
    assert "Olá, Ana X-Injected: sim Bcc: intruso@evil.example!" in text.get_payload(decode=True).decode()


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Ana\r\nBcc: intruso@evil.example"), ("email", "ana@example.com\r\nBcc: intruso@evil.example")],
)
def test_the_api_refuses_line_breaks_and_nothing_is_sent(smtp_server, smtp_backend_factory, field, value):
    product = make_product()
    body = {"product": product.pk, "name": "Ana", "email": "ana@example.com", field: value}

    response = APIClient().post("/api/enrollments/", body, format="json")
    deliver(smtp_backend_factory)

    assert response.status_code == 400
    assert field in response.json()
    assert smtp_server.handler.received == []


def test_an_address_holding_an_encoded_word_is_refused_and_nothing_is_sent(smtp_server, smtp_backend_factory):
    # EmailValidator accepts "=" and "?" in a local part, but Django's address
    # parser decodes "=?x-nope?q?abc?=" at send: the mail would go to abc@example.com.
    # (Before, checking the built headers raised LookupError and the API answered 500.)
    product = make_product()
    body = {"product": product.pk, "name": "Ana", "email": "=?x-nope?q?abc?=@example.com"}

    response = APIClient().post("/api/enrollments/", body, format="json")
    deliver(smtp_backend_factory)

    assert response.status_code == 400
    assert "email" in response.json()
    assert smtp_server.handler.received == []
