import json

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print a task result's status and return value as JSON."

    def add_arguments(self, parser):
        parser.add_argument("task_id", help="The id place_order printed.")

    def handle(self, *, task_id: str, **options):
        from shop.tasks import count_words

        result = count_words.get_result(task_id)
        value = result.return_value if result.is_finished and not result.errors else None
        self.stdout.write(json.dumps({"status": str(result.status), "return_value": value}))
