from datetime import timedelta

import pytest
from django.utils import timezone

from outbox_worker.models import AttemptOutcome, DeliveryAttempt, OutboxMessage, OutboxStatus, WorkerHeartbeat
from outbox_worker.selectors import (
    capped_count,
    outbox_action_plan,
    outbox_dashboard,
    outbox_kinds,
    outbox_search,
)
from outbox_worker.services import outbox_cancel, outbox_requeue, outbox_resend, outbox_retry_now
from tests.factories import enqueue_messages

pytestmark = pytest.mark.django_db


def _attempt(message, *, worker="w1", outcome=AttemptOutcome.SENT, ago=timedelta(minutes=1), code=None):
    at = timezone.now() - ago
    return DeliveryAttempt.objects.create(
        message=message, attempt=1, worker=worker, started_at=at, finished_at=at, outcome=outcome, smtp_code=code
    )


def test_dashboard_counts_backlog_failures_and_workers():
    now = timezone.now()
    old_due, waiting, held, sent, failed = enqueue_messages(5)
    OutboxMessage.objects.filter(pk=old_due.pk).update(available_at=now - timedelta(minutes=30))
    OutboxMessage.objects.filter(pk=waiting.pk).update(available_at=now + timedelta(hours=1))
    OutboxMessage.objects.filter(pk=held.pk).update(
        status=OutboxStatus.SENDING, locked_by="worker-b", locked_until=now + timedelta(minutes=2)
    )
    OutboxMessage.objects.filter(pk=sent.pk).update(status=OutboxStatus.SENT)
    OutboxMessage.objects.filter(pk=failed.pk).update(status=OutboxStatus.FAILED)
    _attempt(sent, worker="worker-a")
    _attempt(failed, worker="worker-a", outcome=AttemptOutcome.PERMANENT, code=550)
    _attempt(failed, worker="worker-old", outcome=AttemptOutcome.TRANSIENT, ago=timedelta(hours=3))
    _attempt(failed, worker="worker-older", outcome=AttemptOutcome.TRANSIENT, ago=timedelta(hours=30))
    # An idle worker is known by its heartbeat; one whose heartbeat went stale is gone.
    WorkerHeartbeat.objects.create(
        worker_id="worker-idle", hostname="h", pid=1, started_at=now, last_seen_at=now - timedelta(seconds=10)
    )
    WorkerHeartbeat.objects.create(
        worker_id="worker-dead", hostname="h", pid=2, started_at=now, last_seen_at=now - timedelta(minutes=30)
    )

    health = outbox_dashboard(now=now)

    assert {status: count.value for status, count in health.counts.items()} == {
        "pending": 2,
        "sending": 1,
        "sent": 1,
        "failed": 1,
        "cancelled": 0,
        "suppressed": 0,
    }
    assert health.due_now == 1
    assert health.oldest_due_age == timedelta(minutes=30)
    # The attempt 30 h ago is outside the window; the one 3 h ago is a failure but not a live worker.
    assert (health.sent_24h, health.failures_24h) == (1, 2)
    # Workers are known by their heartbeat alone (the claim's definition): worker-b holds a
    # row but has no heartbeat, so its row counts as left behind (stalled), not held.
    assert [(w.worker_id, w.alive, w.holding) for w in health.workers] == [
        ("worker-idle", True, 0),
        ("worker-dead", False, 0),
    ]
    assert health.stalled.value == 1
    assert len(health.hours) in (24, 25)
    assert sum(bucket.failed for bucket in health.hours[-4:]) == 2


def test_capped_count_stops_counting_at_the_cap():
    enqueue_messages(7)

    counted = capped_count(OutboxMessage.objects.all(), cap=5)
    assert (counted.value, counted.capped) == (5, True)
    counted = capped_count(OutboxMessage.objects.all(), cap=7)
    assert (counted.value, counted.capped) == (7, False)


def test_kinds_lists_each_kind_once_sorted():
    enqueue_messages(2, kind="enrollment_confirmation")
    enqueue_messages(1, kind="password_reset")
    enqueue_messages(1)

    assert outbox_kinds() == ["enrollment_confirmation", "password_reset"]


def test_search_finds_by_message_id_enrollment_address_and_text():
    first, second = enqueue_messages(2, source="enrollments.enrollment:42")
    other = enqueue_messages(1, to=["Bia@Example.com"], subject="Boleto vencendo", source="enrollments.enrollment:7")[0]

    def found(term):
        return set(outbox_search(queryset=OutboxMessage.objects.all(), term=term).values_list("pk", flat=True))

    assert found(first.message_id) == {first.pk}
    assert found(first.message_id.strip("<>")) == {first.pk}
    assert found("matrícula 42") == found("enrollments.enrollment:42") == {first.pk, second.pk}
    assert found("Matricula:7") == {other.pk}
    assert found(" bia@example.COM ") == {other.pk}
    assert found("bia@") == {other.pk}
    assert found("boleto") == {other.pk}
    assert found("ninguem@example.com") == set()


STATES = {
    "due": {},
    "waiting": {"available_at": timezone.now() + timedelta(hours=1)},
    "held": {"status": OutboxStatus.SENDING, "locked_by": "w1", "locked_until": timezone.now() + timedelta(hours=1)},
    "lease_expired": {"status": OutboxStatus.SENDING, "locked_by": "w1", "locked_until": timezone.now()},
    # Lease still running, but its holder's heartbeat went stale: the claim would take it back.
    "holder_dead": {
        "status": OutboxStatus.SENDING,
        "locked_by": "dead",
        "locked_until": timezone.now() + timedelta(hours=1),
    },
    "sent": {"status": OutboxStatus.SENT},
    "failed": {"status": OutboxStatus.FAILED},
    "cancelled": {"status": OutboxStatus.CANCELLED},
}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize(
    ("action", "service"),
    [
        ("resend", outbox_resend),
        ("retry_now", outbox_retry_now),
        ("cancel", outbox_cancel),
        ("requeue", outbox_requeue),
    ],
)
def test_confirmation_page_plan_agrees_with_what_the_service_then_does(state, action, service):
    now = timezone.now()
    WorkerHeartbeat.objects.create(worker_id="w1", hostname="h", pid=1, started_at=now, last_seen_at=now)
    WorkerHeartbeat.objects.create(
        worker_id="dead", hostname="h", pid=2, started_at=now, last_seen_at=now - timedelta(minutes=10)
    )
    [message] = enqueue_messages(1)
    OutboxMessage.objects.filter(pk=message.pk).update(**STATES[state])

    [plan] = outbox_action_plan(action=action, message_ids=[message.pk])
    report = service(message_ids=[message.pk])

    did_something = message.pk in report.changed or message.pk in report.created
    assert plan.allowed == did_something
    assert plan.refusal == report.refused.get(message.pk)
