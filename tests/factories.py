"""Small builders for test data (plain functions: no factory library needed)."""

from decimal import Decimal
from itertools import count

from django.db import transaction

from backend.products.models import Product
from outbox_worker.models import OutboxMessage
from outbox_worker.services import outbox_enqueue

_numbers = count(1)


def make_product(**overrides) -> Product:
    n = next(_numbers)
    fields = {"name": f"Curso {n}", "slug": f"curso-{n}", "price": Decimal("297.00"), "active": True}
    fields.update(overrides)
    return Product.objects.create(**fields)


def enqueue_messages(n: int, **overrides) -> list[OutboxMessage]:
    """Queue `n` simple emails in one transaction; each says its index in the subject."""
    messages = []
    with transaction.atomic():
        for i in range(n):
            fields = {
                "to": [f"aluno{i}@example.com"],
                "subject": f"Mensagem {i}",
                "body_text": f"Corpo {i}",
            }
            fields.update(overrides)
            messages.append(outbox_enqueue(**fields))
    return messages
