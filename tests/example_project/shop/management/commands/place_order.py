import json

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from outbox_worker.services import outbox_enqueue


class Command(BaseCommand):
    help = "Queue an order confirmation email (and, with the tasks backend, a task) in one transaction; print ids."

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
            task_id = None
            if settings.HAS_OUTBOX_TASKS:
                from shop.tasks import count_words

                task_id = count_words.enqueue(text="one two three").id
        self.stdout.write(json.dumps({"message_id": message.pk, "task_id": task_id}))
