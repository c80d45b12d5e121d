from datetime import timedelta

from django.core.management.base import BaseCommand, CommandParser

from backend.enrollments.services import idempotency_key_prune


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError
    return number


class Command(BaseCommand):
    help = "Delete stored Idempotency-Keys (and their saved responses) older than a given age."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-hours",
            type=_positive_float,
            default=24.0,
            help="Age in hours past which a key is deleted (default 24).",
        )

    def handle(self, *args: object, **options: object) -> None:
        deleted = idempotency_key_prune(older_than=timedelta(hours=options["older_than_hours"]))
        self.stdout.write(f"{deleted} idempotency keys deleted")
