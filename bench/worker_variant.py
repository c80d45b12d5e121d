"""Our unchanged OutboxWorker with one or two changes applied from outside, to measure them.

Used by benchmark `b3x` only: it shows what the changes proposed in
docs/benchmarks.md would buy, without touching outbox_worker/.

  --open-once     the email-backend connection is opened explicitly, so Django's
                  `send_messages()` keeps it for the whole batch (today it opens
                  and closes a connection for every message); reopened after an error.
  --async-commit  the worker's own database session uses `synchronous_commit = off`,
                  so the per-message finishing commit does not wait for the WAL flush.
  --batch-finish  sent messages are marked `sent` (and their attempts inserted) in one
                  transaction at the end of the batch instead of one transaction each.
                  Experiment only: `sent_at` becomes the batch's end time.
"""

import argparse
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.oursite.settings")
django.setup()

from django.core.mail import get_connection  # noqa: E402
from django.db import transaction  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402
from django.utils import timezone  # noqa: E402

from outbox_worker import delivery  # noqa: E402
from outbox_worker.models import DeliveryAttempt, OutboxMessage, OutboxStatus  # noqa: E402
from outbox_worker.transitions import outbox_mark_sent  # noqa: E402
from outbox_worker.worker import OutboxWorker  # noqa: E402


class BatchFinishWorker(OutboxWorker):
    """Buffers `sent` outcomes and writes them in one transaction per batch."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._sent: list[tuple[OutboxMessage, list[DeliveryAttempt]]] = []

    def _finish(self, mark, message, outcome, **kwargs) -> None:
        if mark is outbox_mark_sent:
            self._sent.append((message, kwargs["attempts"]))
            self.stats[outcome] += 1
            return
        super()._finish(mark, message, outcome, **kwargs)

    def process_batch(self) -> int:
        try:
            return super().process_batch()
        finally:
            self._flush()

    def _flush(self) -> None:
        if not self._sent:
            return
        now = timezone.now()
        ids = [message.pk for message, _ in self._sent]
        with transaction.atomic():
            OutboxMessage.objects.filter(pk__in=ids, status=OutboxStatus.SENDING, locked_by=self.worker_id).update(
                status=OutboxStatus.SENT, sent_at=now, last_error="", locked_by="", locked_until=None, updated_at=now
            )
            DeliveryAttempt.objects.bulk_create([a for _, attempts in self._sent for a in attempts])
        self._sent = []


def opened_connection():
    backend = get_connection()
    backend.open()
    return backend


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open-once", action="store_true")
    parser.add_argument("--async-commit", action="store_true")
    parser.add_argument("--batch-finish", action="store_true")
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
    worker_class = BatchFinishWorker if args.batch_finish else OutboxWorker
    worker = worker_class(once=True, connection_factory=factory)
    worker.install_signal_handlers()
    stats = worker.run()
    print(dict(stats))


if __name__ == "__main__":
    main()
