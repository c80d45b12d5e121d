"""Hostile-but-valid names and addresses, end to end: API → outbox → worker → a real SMTP server.

Every received message is parsed back with the modern email parser and must
have no defects, exactly the headers Django puts on a confirmation, and read
exactly as typed: the decoded subject, the text part, and the HTML part
(escaped exactly once).
"""

import html
from email import message_from_bytes, policy

import pytest
from rest_framework.test import APIClient

from backend.enrollments.models import Enrollment
from outbox_worker.models import OutboxMessage
from outbox_worker.worker import OutboxWorker
from tests.factories import make_product

pytestmark = pytest.mark.django_db(transaction=True)

EXPECTED_HEADERS = ["Content-Type", "MIME-Version", "Subject", "From", "To", "Date", "Message-ID"]

PRODUCTS = [
    "Excel & Power BI d'Ana",
    'Curso "avançado" <b>não</b> é HTML & ponto',
    "=?utf-8?q?Bcc:_intruso@evil.example?= (parece encoded-word)",
    "Ação, Coração & Razão — edição 2026" + " ãéíõú" * 20,
    "Árabe العربية e emoji 🎓📚",
]
# (name as typed, email as typed, the address the message must go to)
STUDENTS = [
    ('Zoë d\'Ávila & <Co> "2026"', "zoe@example.com", "zoe@example.com"),
    ('<script>alert("x")</script> Lúcia', "O'Neil+curso@Example.com", "o'neil+curso@example.com"),
    ("Ana \u202eLúcia", '"ana@maria"@example.com', '"ana@maria"@example.com'),
    ("José &amp; já-escapado", "jose@exámple.com", "jose@xn--exmple-qta.com"),
    ("Bcc: intruso@evil.example", '"a\\"b"@example.com', '"a\\"b"@example.com'),
    ("=?utf-8?b?SGk=?=", "x@例え.jp", "x@xn--r8jz45g.jp"),
]


def test_hostile_but_valid_enrollments_are_delivered_exactly_as_typed(smtp_server, smtp_backend_factory):
    products = [make_product(name=name) for name in PRODUCTS]
    typed = {}
    client = APIClient()
    for product, (name, email, address) in ((p, s) for p in products for s in STUDENTS):
        response = client.post(
            "/api/enrollments/", {"product": product.pk, "name": name, "email": email}, format="json"
        )
        assert response.status_code == 201, (name, email, response.content)
        enrollment = Enrollment.objects.get(pk=response.json()["id"])
        row = OutboxMessage.objects.get(source=enrollment.outbox_source)
        typed[row.message_id] = (product.name, name, address)

    OutboxWorker(once=True, connection_factory=smtp_backend_factory).run()

    received = smtp_server.handler.wait_for(len(typed))
    assert len(received) == len(typed)
    for item in received:
        message = message_from_bytes(item.data, policy=policy.default)
        product, name, address = typed[message["Message-ID"]]
        context = f"{product!r} / {name!r} / {address!r}"
        assert _defects(message) == [], context
        assert message.keys() == EXPECTED_HEADERS, context
        # A long subject is folded right after "Subject:"; the fold's whitespace is
        # not part of the text (RFC 5322 FWS) and mail readers drop it.
        assert message["Subject"].lstrip(" ") == f"Matrícula confirmada: {product}", context
        assert [a.addr_spec for a in message["To"].addresses] == [address], context
        assert item.rcpt_tos == [address], context
        text = message.get_body(("plain",)).get_content()
        assert f"Olá, {name}!" in text and f'"{product}"' in text, context
        page = message.get_body(("html",)).get_content()
        assert f"Olá, {html.escape(name)}!" in page, context
        assert f"<strong>{html.escape(product)}</strong>" in page, context


def _defects(message) -> list:
    found = [*message.defects]
    for part in message.walk():
        found += part.defects
        found += [defect for value in part.values() for defect in getattr(value, "defects", ())]
    return found
