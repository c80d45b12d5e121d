"""The claim statement and the guarded transitions, on PostgreSQL and SQLite."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.db.models.functions import Now
from django.utils import timezone

from outbox_worker.claim import outbox_claim_batch
from outbox_worker.models import AttemptOutcome, DeliveryAttempt, OutboxMessage, OutboxStatus, WorkerHeartbeat
from outbox_worker.transitions import Outcome, outbox_finish, outbox_mark_started, outbox_release, outbox_worker_seen
from tests.factories import enqueue_messages

pytestmark = pytest.mark.django_db


def claim(worker_id="w1", limit=10, lease_seconds=60):
    return outbox_claim_batch(worker_id=worker_id, limit=limit, lease_seconds=lease_seconds)


def beat(worker_id, seconds_ago=0.0):
    """A heartbeat for `worker_id`, `seconds_ago` old by the database clock."""
    outbox_worker_seen(worker_id=worker_id, hostname="host", pid=1)
    WorkerHeartbeat.objects.filter(worker_id=worker_id).update(last_seen_at=Now() - timedelta(seconds=seconds_ago))


def expire_lease(message):
    OutboxMessage.objects.filter(pk=message.pk).update(locked_until=Now() - timedelta(seconds=1))


def test_claim_takes_due_rows_oldest_first_and_leases_them_without_charging_an_attempt():
    older, newer = enqueue_messages(2)
    OutboxMessage.objects.filter(pk=older.pk).update(available_at=timezone.now() - timedelta(minutes=5))
    before = timezone.now()

    claimed = claim()

    assert [m.pk for m in claimed] == [older.pk, newer.pk]
    for message in OutboxMessage.objects.all():
        assert message.status == OutboxStatus.SENDING
        assert message.locked_by == "w1"
        assert before + timedelta(seconds=59) < message.locked_until < timezone.now() + timedelta(seconds=61)
        assert (message.attempts, message.started_at, message.interruptions) == (0, None, 0)


def test_claim_respects_the_limit():
    enqueue_messages(5)
    assert len(claim(limit=3)) == 3
    assert OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count() == 2


def test_claim_skips_rows_that_are_not_due_finished_or_held_by_a_live_worker():
    future, sent, failed, cancelled, held = enqueue_messages(5)
    now = timezone.now()
    beat("other")
    OutboxMessage.objects.filter(pk=future.pk).update(available_at=now + timedelta(seconds=30))
    OutboxMessage.objects.filter(pk=sent.pk).update(status=OutboxStatus.SENT)
    OutboxMessage.objects.filter(pk=failed.pk).update(status=OutboxStatus.FAILED)
    OutboxMessage.objects.filter(pk=cancelled.pk).update(status=OutboxStatus.CANCELLED)
    OutboxMessage.objects.filter(pk=held.pk).update(
        status=OutboxStatus.SENDING, locked_by="other", locked_until=now + timedelta(seconds=30)
    )

    assert claim() == []


def test_an_expired_lease_is_claimed_again_by_another_worker():
    [message] = enqueue_messages(1)
    beat("slow")
    claim(worker_id="slow", lease_seconds=30)
    assert claim(worker_id="w2") == []

    expire_lease(message)
    [again] = claim(worker_id="w2")

    assert (again.pk, again.locked_by, again.attempts) == (message.pk, "w2", 0)


@pytest.mark.parametrize("heartbeat", ["stale", "missing"])
def test_rows_of_a_worker_whose_heartbeat_is_stale_or_missing_come_back_before_their_lease_ends(heartbeat, settings):
    settings.OUTBOX_WORKER_STALE_AFTER = 10
    [message] = enqueue_messages(1)
    beat("dead")
    claim(worker_id="dead", lease_seconds=3600)
    beat("live")
    assert claim(worker_id="live") == []

    if heartbeat == "stale":
        beat("dead", seconds_ago=11)
    else:
        WorkerHeartbeat.objects.filter(worker_id="dead").delete()
    [again] = claim(worker_id="live")

    assert (again.pk, again.locked_by) == (message.pk, "live")


def test_a_worker_never_takes_back_its_own_rows():
    enqueue_messages(1)
    claim(worker_id="w1")  # no heartbeat at all: to anyone else, w1 looks dead

    assert claim(worker_id="w1") == []
    assert len(claim(worker_id="w2")) == 1


def test_a_row_in_flight_when_its_worker_died_comes_back_with_one_interruption_and_its_attempt_spent():
    started, never_started = enqueue_messages(2)
    claim(worker_id="dead")
    outbox_mark_started(message_ids=[started.pk], worker_id="dead")

    claim(worker_id="w2")

    started.refresh_from_db()
    never_started.refresh_from_db()
    assert (started.attempts, started.interruptions, started.started_at) == (1, 1, None)
    assert (never_started.attempts, never_started.interruptions) == (0, 0)


def test_only_a_death_with_the_row_marked_alone_counts_as_a_solo_interruption():
    alone, first_of_two, second_of_two = enqueue_messages(3)
    claim(worker_id="dead")
    outbox_mark_started(message_ids=[alone.pk], worker_id="dead")
    outbox_mark_started(message_ids=[first_of_two.pk, second_of_two.pk], worker_id="dead")

    claim(worker_id="w2")

    rows = {m.pk: m for m in OutboxMessage.objects.all()}
    assert (rows[alone.pk].interruptions, rows[alone.pk].solo_interruptions) == (1, 1)
    pair = (rows[first_of_two.pk], rows[second_of_two.pk])
    assert {(row.interruptions, row.solo_interruptions) for row in pair} == {(1, 0)}
    assert not any(row.started_solo for row in rows.values())  # the flag belongs to one attempt


def test_a_clock_an_hour_ahead_does_not_take_a_live_lease(monkeypatch):
    """Leases are judged by the database clock: a worker's own clock cannot expire them."""
    [message] = enqueue_messages(1)
    beat("honest")
    claim(worker_id="honest", lease_seconds=60)
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=1))

    assert claim(worker_id="ahead") == []
    message.refresh_from_db()
    assert message.locked_by == "honest"


def test_mark_started_counts_the_attempt_and_refuses_rows_no_longer_held():
    mine, taken = enqueue_messages(2)
    claim(worker_id="w1")
    OutboxMessage.objects.filter(pk=taken.pk).update(locked_by="w2")

    attempts, lost = outbox_mark_started(message_ids=[mine.pk, taken.pk], worker_id="w1")

    assert (attempts, lost) == ({mine.pk: 1}, [])
    mine.refresh_from_db()
    assert mine.started_at is not None


def test_a_worker_that_lost_its_lease_cannot_finish_the_row_and_is_told_which_rows():
    kept, taken = enqueue_messages(2)
    claim(worker_id="slow")
    OutboxMessage.objects.filter(pk=taken.pk).update(locked_by="w2")

    lost = outbox_finish(
        outcomes=[Outcome(kept.pk, OutboxStatus.SENT), Outcome(taken.pk, OutboxStatus.SENT)], worker_id="slow"
    )

    assert lost == [taken.pk]
    taken.refresh_from_db()
    assert (taken.status, taken.locked_by) == (OutboxStatus.SENDING, "w2")


def test_finishing_twice_after_a_lost_commit_acknowledgement_records_the_tries_once():
    [message] = enqueue_messages(1)
    claim(worker_id="w1")
    outbox_mark_started(message_ids=[message.pk], worker_id="w1")
    now = timezone.now()
    tried = DeliveryAttempt(
        message_id=message.pk, attempt=1, worker="w1", started_at=now, finished_at=now, outcome=AttemptOutcome.SENT
    )
    outcomes = [Outcome(message.pk, OutboxStatus.SENT, attempts=[tried])]

    assert outbox_finish(outcomes=outcomes, worker_id="w1") == []
    # The commit went through but its acknowledgement was lost: the worker writes again.
    assert outbox_finish(outcomes=outcomes, worker_id="w1") == []

    assert message.delivery_attempts.count() == 1
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT


def test_release_hands_back_claimed_rows_and_refunds_an_attempt_counted_for_a_send_that_never_began():
    messages = enqueue_messages(2)
    claim(worker_id="w1")
    outbox_mark_started(message_ids=[messages[0].pk], worker_id="w1")

    released = outbox_release(message_ids=[m.pk for m in messages], worker_id="w1")

    assert released == 2
    for message in OutboxMessage.objects.all():
        assert (message.status, message.attempts, message.locked_by, message.started_at) == (
            OutboxStatus.PENDING, 0, "", None
        )  # fmt: skip


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


@pytest.mark.parametrize(("decided_ago", "due_in_between"), [(0, (25, 31)), (20, (5, 11)), (60, (-60, 0))])
def test_a_retry_counts_from_its_failure_not_from_when_its_outcome_is_written(decided_ago, due_in_between):
    """Outcomes wait in memory (OUTBOX_FINISH_WITHIN): that wait is not added on top of the backoff."""
    [message] = enqueue_messages(1)
    claim(worker_id="w1")
    outcome = Outcome(message.pk, OutboxStatus.PENDING, "451", retry_in=timedelta(seconds=30))
    outcome.decided_at -= decided_ago

    assert outbox_finish(outcomes=[outcome], worker_id="w1") == []

    message.refresh_from_db()
    due_in = message.available_at - OutboxMessage.objects.annotate(now=Now()).values_list("now", flat=True)[0]
    assert message.status == OutboxStatus.PENDING
    low, high = due_in_between
    assert timedelta(seconds=low) <= due_in <= timedelta(seconds=high)
    assert outcome.retry_due() == pytest.approx(outcome.decided_at + 30)
