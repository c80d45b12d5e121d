import json

from django.core.management.base import BaseCommand
from django.db import transaction

from outbox_worker.services import outbox_enqueue
from shop.tasks import count_words


class Command(BaseCommand):
    help = "Queue an order confirmation email and a task in one transaction; print their ids as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True, help="Recipient of the confirmation.")
        parser.add_argument("--order", type=int, default=1, help="The order number the email is about.")

    def handle(self, *, email: str, order: int, **options):
        with transaction.atomic():
            message = outbox_enqueue(
                to=[email],
                subject=f"Your order {order}",
                body_text="Thank you for your order.",
                kind="order-confirmation",
                source=f"shop.order:{order}",
                dedup_key=f"order-confirmation:{order}",
            )
            result = count_words.enqueue(text="one two three")
        self.stdout.write(json.dumps({"message_id": message.pk, "task_id": result.id}))
