"""Our unchanged OutboxWorker with one or two changes applied from outside, to measure them.

Used by benchmark `b3x` only: it shows what the changes proposed in
docs/benchmarks.md would buy, without touching outbox_worker/.

  --open-once     the email-backend connection is opened explicitly, so Django's
                  `send_messages()` keeps it for the whole batch (today it opens
                  and closes a connection for every message); reopened after an error.
  --async-commit  the worker's own database session uses `synchronous_commit = off`,
                  so the per-message finishing commit does not wait for the WAL flush.
"""

import argparse
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.oursite.settings")
django.setup()

from django.core.mail import get_connection  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402

from outbox_worker import delivery  # noqa: E402
from outbox_worker.worker import OutboxWorker  # noqa: E402


def opened_connection():
    backend = get_connection()
    backend.open()
    return backend


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open-once", action="store_true")
    parser.add_argument("--async-commit", action="store_true")
    args = parser.parse_args()
    factory = get_connection
    if args.open_once:
        factory = opened_connection
        # After a failed send, deliver() closes the connection; open it again
        # before the next send instead of falling back to one per message.
        original_deliver = delivery.deliver

        def deliver(message, *, connection, **kwargs):
            connection.open()
            return original_deliver(message, connection=connection, **kwargs)

        import outbox_worker.worker as worker_module

        worker_module.deliver = deliver
    if args.async_commit:

        def async_commit(sender, connection, **kwargs):
            with connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO off")

        connection_created.connect(async_commit, weak=False)
    worker = OutboxWorker(once=True, connection_factory=factory)
    worker.install_signal_handlers()
    stats = worker.run()
    print(dict(stats))


if __name__ == "__main__":
    main()
