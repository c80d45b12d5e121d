"""Every status change a worker makes after a claim, each a guarded update.

A worker may only finish a row it still holds (`status = sending AND
locked_by = me`). If its lease expired and another worker took the row, the
update matches nothing and the caller is told, instead of overwriting the
other worker's result.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, QuerySet

from .models import DeliveryAttempt, OutboxMessage, OutboxStatus, WorkerHeartbeat


@dataclass
class Outcome:
    """How one delivery ended, waiting to be written.

    `status` is SENT, FAILED, or PENDING (a transient failure, next try at
    `available_at`).
    """

    message_id: int
    status: str
    error: str = ""
    available_at: datetime | None = None
    attempts: list[DeliveryAttempt] = field(default_factory=list)


def _held(message_ids: Iterable[int], worker_id: str) -> QuerySet[OutboxMessage]:
    return OutboxMessage.objects.filter(pk__in=list(message_ids), status=OutboxStatus.SENDING, locked_by=worker_id)


def outbox_finish(*, outcomes: list[Outcome], worker_id: str, now: datetime) -> int:
    """Write delivery outcomes in one transaction; return how many rows were no longer held.

    All sent messages are finished by one UPDATE: after a healthy batch that
    is one statement however many emails went out.
    """
    lost = 0
    with transaction.atomic():
        sent_ids = [o.message_id for o in outcomes if o.status == OutboxStatus.SENT]
        if sent_ids:
            updated = _held(sent_ids, worker_id).update(
                status=OutboxStatus.SENT, sent_at=now, last_error="", locked_by="", locked_until=None, updated_at=now
            )
            lost += len(sent_ids) - updated
        for outcome in outcomes:
            if outcome.status == OutboxStatus.SENT:
                continue
            updated = _held([outcome.message_id], worker_id).update(
                status=outcome.status,
                last_error=outcome.error,
                available_at=outcome.available_at or F("available_at"),
                locked_by="",
                locked_until=None,
                updated_at=now,
            )
            lost += 1 - updated
        # The tries happened whatever became of the lease: record them either way.
        DeliveryAttempt.objects.bulk_create([attempt for o in outcomes for attempt in o.attempts])
    return lost


def outbox_release(*, message_ids: Iterable[int], worker_id: str, now: datetime) -> int:
    """Hand back claimed messages this worker never started: due now, claim not counted."""
    return _held(message_ids, worker_id).update(
        status=OutboxStatus.PENDING,
        locked_by="",
        locked_until=None,
        attempts=F("attempts") - 1,
        updated_at=now,
    )


def outbox_extend_leases(*, message_ids: Iterable[int], worker_id: str, now: datetime, lease_seconds: float) -> int:
    """Push the lease of the given rows `worker_id` still holds; return how many that is."""
    return _held(message_ids, worker_id).update(locked_until=now + timedelta(seconds=lease_seconds))


def outbox_worker_seen(*, worker_id: str, hostname: str, pid: int, started_at: datetime, now: datetime) -> None:
    """Record that the worker `worker_id` is alive."""
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={"last_seen_at": now},
        create_defaults={"hostname": hostname, "pid": pid, "started_at": started_at, "last_seen_at": now},
    )


def outbox_worker_gone(*, worker_id: str) -> None:
    WorkerHeartbeat.objects.filter(worker_id=worker_id).delete()
