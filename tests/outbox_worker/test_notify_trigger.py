"""The NOTIFY trigger wakes workers for rows that are due now, and only for those.

Heard on a real LISTEN connection. To show that something did *not* notify
without sleeping, each test commits its change and then a marker
notification in a later transaction: notifications arrive in commit order, so
once the marker is in, anything the change sent is in too.

The listening connection stands in for an idle worker: it holds the idle lock,
without which the triggers notify nobody (test_notify_idle_lock.py).
"""

from datetime import timedelta

import psycopg2
import pytest
from django.db import connection, transaction
from django.utils import timezone

from outbox_worker.background import CHANNEL
from outbox_worker.idle import IDLE_LOCK_KEY
from outbox_worker.models import OutboxMessage, OutboxStatus
from tests.factories import enqueue_messages
from tests.notifications import heard_before_marker

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def listener():
    db = connection.settings_dict
    conn = psycopg2.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"], port=db["PORT"] or 5432
    )
    conn.autocommit = True
    conn.cursor().execute(f"LISTEN {CHANNEL}")
    conn.cursor().execute("SELECT pg_advisory_lock(%s)", [IDLE_LOCK_KEY])
    yield conn
    conn.close()


def test_a_message_due_now_notifies_at_commit(listener):
    enqueue_messages(1)

    assert heard_before_marker(listener) == [""]


def test_a_message_enqueued_late_in_a_long_transaction_still_notifies(listener):
    # The enqueue stamps available_at after the transaction began (as enrollment_create does, after its
    # INSERT): a trigger comparing with now(), the transaction's start, would take it for a future row.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.05)")
        enqueue_messages(1)

    assert heard_before_marker(listener) == [""]


def test_a_message_scheduled_for_later_does_not_notify(listener):
    enqueue_messages(1, available_at=timezone.now() + timedelta(minutes=10))

    assert heard_before_marker(listener) == []


def test_a_backoff_reschedule_does_not_notify_but_a_release_does(listener):
    [message] = enqueue_messages(1)
    OutboxMessage.objects.filter(pk=message.pk).update(status=OutboxStatus.SENDING, locked_by="w1")
    assert heard_before_marker(listener) == [""]  # the enqueue's own
    listener.notifies.clear()

    # What the worker writes after a 451: pending again, due after the backoff.
    OutboxMessage.objects.filter(pk=message.pk).update(
        status=OutboxStatus.PENDING, available_at=timezone.now() + timedelta(seconds=30), locked_by=""
    )
    assert heard_before_marker(listener) == []
    listener.notifies.clear()

    # What the worker writes for a row it claimed and never started: due now, another worker should take it.
    OutboxMessage.objects.filter(pk=message.pk).update(status=OutboxStatus.SENDING, locked_by="w1")
    OutboxMessage.objects.filter(pk=message.pk).update(
        status=OutboxStatus.PENDING, available_at=timezone.now(), locked_by=""
    )
    assert heard_before_marker(listener) == [""]


def test_finishing_a_message_does_not_notify(listener):
    [message] = enqueue_messages(1)
    assert heard_before_marker(listener) == [""]
    listener.notifies.clear()

    OutboxMessage.objects.filter(pk=message.pk).update(status=OutboxStatus.SENDING, locked_by="w1")
    OutboxMessage.objects.filter(pk=message.pk).update(status=OutboxStatus.SENT, locked_by="")

    assert heard_before_marker(listener) == []
