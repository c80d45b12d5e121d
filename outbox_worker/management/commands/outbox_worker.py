import os
from collections.abc import Mapping

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from outbox_worker.conf import outbox_settings
from outbox_worker.supervisor import SUPERVISOR_PID_ENV, ChildRefused, Supervisor, child_program, die_with_parent
from outbox_worker.worker import OutboxWorker

# Sender threads overlap the provider's latency. Real providers take 50-300 ms
# per reply, where one thread manages ~5 emails/s and the rate grows with the
# threads (bench b4: 14/s with 4, 32/s with 10, 116/s with 20 at 50 ms). On a
# local server that accepts in 2 ms, 8 threads drained 2,000 emails at 1.04x
# django-post-office's default 5 threads, 4 at 0.88x (docs/benchmarks-issue8.md).
# Each thread holds an email and a database connection: 8 + 2 per process. Use
# --concurrency 3 where a provider caps connections (Microsoft 365 allows 3).
POSTGRES_CONCURRENCY = 8
# How long --processes' parent waits for its children to stop, beyond the send deadline that
# bounds the message each has in hand: writing outcomes and handing rows back.
STOP_MARGIN = 60.0


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


def child_arguments(options: Mapping[str, object], *, processes: int) -> list[str]:
    """The options one of `processes` children gets: the parent's own, and `--processes 1`.

    `--rate` is the whole command's, so each child gets its share. Django's
    --settings reaches the children through DJANGO_SETTINGS_MODULE, which it sets.
    The parent ran the system checks on the same code and settings: the children
    skip them (about 0.6 s of CPU each, while the others start too).
    """
    arguments = ["outbox_worker", "--processes", "1", "--skip-checks"]
    if options["once"]:
        arguments.append("--once")
    if options["no_notify"]:
        arguments.append("--no-notify")
    for flag, key in (
        ("--batch-size", "batch_size"),
        ("--poll-interval", "poll_interval"),
        ("--lease-seconds", "lease_seconds"),
        ("--concurrency", "concurrency"),
        ("--pythonpath", "pythonpath"),
    ):
        if options.get(key) is not None:
            arguments += [flag, str(options[key])]
    if options["rate"] is not None:
        arguments += ["--rate", repr(options["rate"] / processes)]
    if options["queues"] is not None:
        arguments += ["--queues", ",".join(options["queues"])]
    return arguments


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
            help=(
                "At most this many messages per second from this command, shared by its --processes "
                "(for providers that throttle)."
            ),
        )

        parser.add_argument(
            "--processes",
            type=_positive_int,
            default=None,
            help=(
                f"Worker processes, each with its own --concurrency threads (default {outbox_settings.PROCESSES}, "
                "OUTBOX_PROCESSES); one process uses about one CPU. Above 1 this command only supervises them."
            ),
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
        processes = options["processes"] or outbox_settings.PROCESSES
        if processes > 1:
            self.supervise(processes, options)
            return
        if parent_pid := os.environ.get(SUPERVISOR_PID_ENV):
            die_with_parent(int(parent_pid))
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

    def supervise(self, processes: int, options: Mapping[str, object]) -> None:
        supervisor = Supervisor(
            command=[*child_program(), *child_arguments(options, processes=processes)],
            processes=processes,
            once=bool(options["once"]),
            stop_timeout=outbox_settings.SEND_DEADLINE + STOP_MARGIN,
        )
        try:
            code = supervisor.run()
        except ChildRefused as refused:
            raise CommandError(str(refused), returncode=refused.returncode) from None
        if code:
            raise SystemExit(code)
