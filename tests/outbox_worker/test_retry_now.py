import select
from datetime import timedelta

import psycopg2
import pytest
from django.db import connection
from django.utils import timezone

from outbox_worker.background import CHANNEL
from outbox_worker.idle import IDLE_LOCK_KEY
from outbox_worker.models import OutboxMessage, OutboxStatus, WorkerHeartbeat
from outbox_worker.services import Refusal, outbox_retry_now
from tests.factories import enqueue_messages

pytestmark = pytest.mark.django_db


def test_retry_now_makes_a_message_waiting_for_backoff_due_without_touching_its_budget():
    [message] = enqueue_messages(1, available_at=timezone.now() + timedelta(hours=1))
    OutboxMessage.objects.filter(pk=message.pk).update(attempts=2, last_error="451 tente mais tarde")

    report = outbox_retry_now(message_ids=[message.pk])

    message.refresh_from_db()
    assert report.changed == [message.pk]
    assert message.available_at <= timezone.now()
    assert (message.status, message.attempts, message.max_attempts) == (OutboxStatus.PENDING, 2, 3)


@pytest.mark.parametrize(
    ("status", "lease", "reason"),
    [
        (OutboxStatus.SENDING, timedelta(minutes=1), Refusal.HELD),
        (OutboxStatus.SENT, None, Refusal.NOT_WAITING),
        (OutboxStatus.FAILED, None, Refusal.NOT_WAITING),
        (OutboxStatus.CANCELLED, None, Refusal.NOT_WAITING),
    ],
)
def test_retry_now_refuses_messages_that_are_not_waiting(status, lease, reason):
    later = timezone.now() + timedelta(hours=1)
    [message] = enqueue_messages(1, available_at=later)
    OutboxMessage.objects.filter(pk=message.pk).update(
        status=status, locked_by="w1" if lease else "", locked_until=timezone.now() + lease if lease else None
    )

    if lease:
        now = timezone.now()
        WorkerHeartbeat.objects.create(worker_id="w1", hostname="h", pid=1, started_at=now, last_seen_at=now)

    report = outbox_retry_now(message_ids=[message.pk])

    assert report.changed == []
    assert report.refused[message.pk] == reason
    message.refresh_from_db()
    assert message.available_at == later


def test_retry_now_refuses_a_message_that_is_already_due():
    [message] = enqueue_messages(1)

    report = outbox_retry_now(message_ids=[message.pk])

    assert report.refused == {message.pk: Refusal.ALREADY_DUE}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_retry_now_notifies_idle_workers_at_commit():
    [message] = enqueue_messages(1, available_at=timezone.now() + timedelta(hours=1))
    db = connection.settings_dict
    listener = psycopg2.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"], port=db["PORT"] or 5432
    )
    try:
        listener.autocommit = True
        listener.cursor().execute(f"LISTEN {CHANNEL}")
        # Stands in for an idle worker: the trigger notifies only while one holds the idle lock (0013).
        listener.cursor().execute("SELECT pg_advisory_lock(%s)", [IDLE_LOCK_KEY])

        outbox_retry_now(message_ids=[message.pk])

        # Workers wake on this channel; without it the message would wait for the next poll.
        readable, _, _ = select.select([listener], [], [], 10)
        listener.poll()
        assert readable and [n.channel for n in listener.notifies] == [CHANNEL]
    finally:
        listener.close()
