"""Tracking adds no query per email: the provider ids ride the sent UPDATE, suppression is one lookup per claim."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from outbox_worker.claim import outbox_claim_batch
from outbox_worker.models import OutboxMessage, OutboxStatus, SuppressionReason
from outbox_worker.suppression import suppression_add
from outbox_worker.transitions import Outcome, outbox_finish, outbox_mark_started
from tests.factories import enqueue_messages

pytestmark = pytest.mark.django_db


def finish_sent(n: int, worker_id: str) -> int:
    """Claim and finish `n` messages as sent with provider ids; return the statements the finish ran."""
    enqueue_messages(n)
    messages = outbox_claim_batch(worker_id=worker_id, limit=n, lease_seconds=60)
    outbox_mark_started(message_ids=[m.pk for m in messages], worker_id=worker_id)
    outcomes = [Outcome(m.pk, OutboxStatus.SENT, provider_message_id=f"pm-{m.pk}") for m in messages]
    with CaptureQueriesContext(connection) as queries:
        assert outbox_finish(outcomes=outcomes, worker_id=worker_id) == []
    return len(queries)


def test_the_finish_runs_the_same_statements_for_one_sent_email_or_twenty():
    one = finish_sent(1, "w1")
    twenty = finish_sent(20, "w2")

    assert one == twenty
    ids = dict(OutboxMessage.objects.values_list("pk", "provider_message_id"))
    assert ids == {pk: f"pm-{pk}" for pk in ids}


def test_a_claim_checks_the_suppression_list_once_whatever_the_batch_size():
    def claim_statements(n: int, worker_id: str) -> int:
        enqueue_messages(n)
        with CaptureQueriesContext(connection) as queries:
            claimed = outbox_claim_batch(worker_id=worker_id, limit=n, lease_seconds=60)
        assert len(claimed) == n
        return len(queries)

    suppression_add(address="someone-else@example.com", reason=SuppressionReason.HARD_BOUNCE)

    assert claim_statements(1, "w1") == claim_statements(20, "w2")
