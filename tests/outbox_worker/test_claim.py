"""The claim statement and the guarded transitions, on PostgreSQL and SQLite."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from outbox_worker.claim import outbox_claim_batch
from outbox_worker.models import OutboxMessage, OutboxStatus
from outbox_worker.transitions import Outcome, outbox_finish, outbox_release
from tests.factories import enqueue_messages

pytestmark = pytest.mark.django_db


def claim(worker_id="w1", limit=10, lease_seconds=60, now=None):
    return outbox_claim_batch(worker_id=worker_id, limit=limit, lease_seconds=lease_seconds, now=now or timezone.now())


def test_claim_takes_due_rows_oldest_first_and_leases_them():
    older, newer = enqueue_messages(2)
    now = timezone.now()
    OutboxMessage.objects.filter(pk=older.pk).update(available_at=now - timedelta(minutes=5))

    claimed = claim(now=now)

    assert [m.pk for m in claimed] == [older.pk, newer.pk]
    for message in OutboxMessage.objects.all():
        assert message.status == OutboxStatus.SENDING
        assert message.locked_by == "w1"
        assert message.locked_until == now + timedelta(seconds=60)
        assert message.attempts == 1


def test_claim_respects_the_limit():
    enqueue_messages(5)
    assert len(claim(limit=3)) == 3
    assert OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count() == 2


def test_claim_skips_rows_that_are_not_due_finished_or_held():
    future, sent, failed, cancelled, held = enqueue_messages(5)
    now = timezone.now()
    OutboxMessage.objects.filter(pk=future.pk).update(available_at=now + timedelta(seconds=30))
    OutboxMessage.objects.filter(pk=sent.pk).update(status=OutboxStatus.SENT)
    OutboxMessage.objects.filter(pk=failed.pk).update(status=OutboxStatus.FAILED)
    OutboxMessage.objects.filter(pk=cancelled.pk).update(status=OutboxStatus.CANCELLED)
    OutboxMessage.objects.filter(pk=held.pk).update(
        status=OutboxStatus.SENDING, locked_by="other", locked_until=now + timedelta(seconds=30)
    )

    assert claim(now=now) == []


def test_an_expired_lease_is_claimed_again_by_another_worker():
    [message] = enqueue_messages(1)
    start = timezone.now()
    claim(worker_id="crashed", lease_seconds=30, now=start)

    assert claim(worker_id="w2", now=start + timedelta(seconds=29)) == []
    [again] = claim(worker_id="w2", now=start + timedelta(seconds=31))

    assert again.pk == message.pk
    assert again.locked_by == "w2"
    assert again.attempts == 2


def test_a_worker_that_lost_its_lease_cannot_finish_the_row():
    [message] = enqueue_messages(1)
    start = timezone.now()
    claim(worker_id="slow", lease_seconds=30, now=start)
    claim(worker_id="w2", now=start + timedelta(seconds=31))

    lost = outbox_finish(outcomes=[Outcome(message.pk, OutboxStatus.SENT)], worker_id="slow", now=timezone.now())

    assert lost == 1
    message.refresh_from_db()
    assert (message.status, message.locked_by) == (OutboxStatus.SENDING, "w2")


def test_release_hands_back_unstarted_rows_without_counting_an_attempt():
    messages = enqueue_messages(2)
    claim(worker_id="w1")

    released = outbox_release(message_ids=[m.pk for m in messages], worker_id="w1", now=timezone.now())

    assert released == 2
    for message in OutboxMessage.objects.all():
        assert (message.status, message.attempts, message.locked_by) == (OutboxStatus.PENDING, 0, "")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_skip_locked_lets_a_second_worker_claim_other_rows_without_waiting():
    """While worker A's claim transaction still holds its rows, worker B takes the rest at once."""
    enqueue_messages(6)
    a_has_claimed = threading.Event()
    b_done = threading.Event()
    a_rows: list[int] = []

    def worker_a():
        try:
            from django.db import transaction

            with transaction.atomic():  # hold A's row locks open until B is done
                a_rows.extend(m.pk for m in claim(worker_id="A", limit=3))
                a_has_claimed.set()
                assert b_done.wait(timeout=30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker_a)
    thread.start()
    assert a_has_claimed.wait(timeout=30)
    with connection.cursor() as cursor:
        # Fail rather than wait if SKIP LOCKED ever stops skipping.
        cursor.execute("SET lock_timeout = '5s'")
    b_rows = [m.pk for m in claim(worker_id="B", limit=10)]
    b_done.set()
    thread.join()

    assert len(a_rows) == 3
    assert len(b_rows) == 3
    assert not set(a_rows) & set(b_rows)
