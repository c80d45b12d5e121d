import argparse
import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from outbox_worker.services import FINISHED_STATUSES, outbox_prune, outbox_prune_heartbeats

FINISHED = list(FINISHED_STATUSES)
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30d, 12h, 90m")
    return timedelta(**{UNITS[match[2]]: int(match[1])})


def statuses(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    wrong = [s for s in chosen if s not in FINISHED]
    if wrong or not chosen:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(FINISHED)} (got {text!r})")
    return chosen


class Command(BaseCommand):
    help = (
        "Delete finished outbox messages (and their attempts) older than --older-than, in batches, "
        "and the heartbeats of dead workers last seen before then."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", type=duration, required=True,
            help="Age of the last change to delete, e.g. 30d, 12h (units s, m, h, d, w).",
        )  # fmt: skip
        parser.add_argument(
            "--status", type=statuses, default=FINISHED,
            help="Comma-separated finished statuses to delete (default: sent,failed,cancelled).",
        )  # fmt: skip
        parser.add_argument("--batch-size", type=int, default=1000, help="Rows deleted per transaction.")
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")

    def handle(self, *args: object, **options: object) -> None:
        cutoff = timezone.now() - options["older_than"]
        deleted = outbox_prune(
            before=cutoff, statuses=options["status"], batch_size=max(1, options["batch_size"]),
            dry_run=options["dry_run"],
        )  # fmt: skip
        heartbeats = outbox_prune_heartbeats(before=cutoff, dry_run=options["dry_run"])
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(
            f"{verb} {deleted} messages ({', '.join(options['status'])}) last changed before {cutoff:%Y-%m-%d %H:%M%z}"
        )
        self.stdout.write(f"{verb} {heartbeats} heartbeats of dead workers last seen before then")
