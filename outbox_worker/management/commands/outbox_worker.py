from django.core.management.base import BaseCommand, CommandParser
from django.db import connection

from outbox_worker.conf import outbox_settings
from outbox_worker.worker import OutboxWorker

# Sender threads overlap the provider's latency. Real providers take 50-300 ms
# per reply, where one thread manages ~5 emails/s and the rate grows with the
# threads (bench b4: 14/s with 4, 32/s with 10, 116/s with 20 at 50 ms). On a
# local server that accepts in 2 ms, 8 threads drained 2,000 emails at 1.04x
# django-post-office's default 5 threads, 4 at 0.88x (docs/benchmarks-issue8.md).
# Each thread holds an email and a database connection: 8 + 2 per process. Use
# --concurrency 3 where a provider caps connections (Microsoft 365 allows 3).
POSTGRES_CONCURRENCY = 8


def default_concurrency() -> int:
    """Sender threads when --concurrency is not given.

    SQLite takes one writer at a time (and an in-memory database is not shared
    between threads), so threads there only wait for each other.
    """
    return POSTGRES_CONCURRENCY if connection.vendor == "postgresql" else 1


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError
    return number


def _queue_names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


class Command(BaseCommand):
    help = (
        "Deliver queued outbox emails and run queued tasks until stopped "
        "(SIGTERM/SIGINT finishes the message or task in hand)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help=(
                "Deliver everything due now, then exit. Rows a worker killed moments ago still holds are "
                "taken too: it waits up to OUTBOX_WORKER_STALE_AFTER for that worker to count as dead."
            ),
        )
        parser.add_argument(
            "--batch-size",
            type=_positive_int,
            default=None,
            help=f"Messages claimed per turn (default {outbox_settings.BATCH_SIZE}, OUTBOX_BATCH_SIZE).",
        )
        parser.add_argument(
            "--poll-interval",
            type=_non_negative_float,
            default=None,
            help=f"Seconds to wait when nothing is due (default {outbox_settings.POLL_INTERVAL}).",
        )
        parser.add_argument(
            "--lease-seconds",
            type=_positive_float,
            default=None,
            help=(
                f"How long a claim lasts before another worker may take the row "
                f"(default {outbox_settings.LEASE_SECONDS}); must cover one send with its retries."
            ),
        )

        parser.add_argument(
            "--concurrency",
            type=_positive_int,
            default=None,
            help=(
                "Sender threads, each with its own email and database connection "
                f"(default {POSTGRES_CONCURRENCY} on PostgreSQL, 1 on other databases)."
            ),
        )
        parser.add_argument(
            "--no-notify",
            action="store_true",
            help="Poll only; do not LISTEN for notifications (needed behind PgBouncer in transaction mode).",
        )
        parser.add_argument(
            "--rate",
            type=_positive_float,
            default=None,
            help="At most this many messages per second from this process (for providers that throttle).",
        )

        parser.add_argument(
            "--queues",
            type=_queue_names,
            default=None,
            help=(
                "Task queues to run, comma-separated (default: every queue); an empty value runs no tasks, "
                "only emails. Emails are always delivered."
            ),
        )

    def handle(self, *args: object, **options: object) -> None:
        worker = OutboxWorker(
            batch_size=options["batch_size"],
            poll_interval=options["poll_interval"],
            lease_seconds=options["lease_seconds"],
            once=bool(options["once"]),
            concurrency=options["concurrency"] or default_concurrency(),
            notify=False if options["no_notify"] else None,
            rate=options["rate"],
            queues=options["queues"],
        )
        worker.install_signal_handlers()
        stats = worker.run()
        if options["once"]:
            summary = ", ".join(f"{key}: {value}" for key, value in sorted(stats.items())) or "nothing due"
            self.stdout.write(f"outbox_worker --once done ({summary})")
