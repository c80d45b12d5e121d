"""On PostgreSQL, outside a transaction, sent outcomes and the next group's mark are written in one statement."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from outbox_worker.claim import outbox_claim_batch
from outbox_worker.models import AttemptOutcome, DeliveryAttempt, OutboxMessage, OutboxStatus
from outbox_worker.transitions import Attempt, Outcome, outbox_finish, outbox_mark_started
from tests.factories import enqueue_messages

# transaction=True: the worker's own connections run in autocommit, where the single statement is used.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def sent(message_id: int, worker_id: str = "w1", tries: int = 1) -> Outcome:
    now = timezone.now()
    attempts = [
        Attempt(message_id, 1, n, worker_id, now, now, AttemptOutcome.SENT if n == tries else AttemptOutcome.TRANSIENT)
        for n in range(1, tries + 1)
    ]
    return Outcome(message_id, OutboxStatus.SENT, attempts=attempts, provider_message_id=f"pm-{message_id}")


def test_sent_outcomes_and_the_next_mark_are_one_statement_with_the_same_result():
    first, *rest = enqueue_messages(4)
    outbox_claim_batch(worker_id="w1", limit=4, lease_seconds=60)
    outbox_mark_started(message_ids=[first.pk], worker_id="w1")

    with CaptureQueriesContext(connection) as queries:
        marked, lost = outbox_mark_started(
            message_ids=[m.pk for m in rest], worker_id="w1", outcomes=[sent(first.pk, tries=2)]
        )

    assert len(queries) == 1
    assert (marked, lost) == ({m.pk: 1 for m in rest}, [])
    first.refresh_from_db()
    assert (first.status, first.locked_by, first.started_at, first.provider_message_id) == (
        OutboxStatus.SENT, "", None, f"pm-{first.pk}"
    )  # fmt: skip
    assert list(first.delivery_attempts.values_list("try_number", "outcome", "smtp_code")) == [
        (1, AttemptOutcome.TRANSIENT, None),
        (2, AttemptOutcome.SENT, None),
    ]
    assert {
        (m.status, m.attempts, m.started_solo) for m in OutboxMessage.objects.filter(pk__in=[m.pk for m in rest])
    } == {(OutboxStatus.SENDING, 1, False)}


def test_a_message_marked_alone_is_marked_solo():
    first, second = enqueue_messages(2)
    outbox_claim_batch(worker_id="w1", limit=2, lease_seconds=60)
    outbox_mark_started(message_ids=[first.pk], worker_id="w1")

    outbox_mark_started(message_ids=[second.pk], worker_id="w1", outcomes=[sent(first.pk)])

    assert OutboxMessage.objects.get(pk=second.pk).started_solo


def test_finishing_twice_after_a_lost_commit_acknowledgement_records_the_tries_once():
    [message] = enqueue_messages(1)
    outbox_claim_batch(worker_id="w1", limit=1, lease_seconds=60)
    outbox_mark_started(message_ids=[message.pk], worker_id="w1")
    outcomes = [sent(message.pk)]

    assert outbox_finish(outcomes=outcomes, worker_id="w1") == []
    assert outbox_finish(outcomes=outcomes, worker_id="w1") == []

    assert DeliveryAttempt.objects.filter(message=message).count() == 1


def test_a_row_taken_back_by_another_worker_is_reported_lost_and_its_tries_still_recorded():
    kept, taken = enqueue_messages(2)
    outbox_claim_batch(worker_id="w1", limit=2, lease_seconds=60)
    outbox_mark_started(message_ids=[kept.pk, taken.pk], worker_id="w1")
    OutboxMessage.objects.filter(pk=taken.pk).update(locked_by="w2")

    lost = outbox_finish(outcomes=[sent(kept.pk), sent(taken.pk)], worker_id="w1")

    assert lost == [taken.pk]
    assert OutboxMessage.objects.get(pk=taken.pk).status == OutboxStatus.SENDING  # w2's now
    assert DeliveryAttempt.objects.filter(message_id__in=[kept.pk, taken.pk]).count() == 2
