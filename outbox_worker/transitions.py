"""Every status change a worker makes after a claim, each a guarded update.

A worker may only finish a row it still holds (`status = sending AND
locked_by = me`). If its lease expired and another worker took the row, the
update matches nothing and the caller is told, instead of overwriting the
other worker's result.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, QuerySet

from .models import DeliveryAttempt, OutboxMessage, OutboxStatus


def _held(message_ids: Iterable[int], worker_id: str) -> QuerySet[OutboxMessage]:
    return OutboxMessage.objects.filter(pk__in=list(message_ids), status=OutboxStatus.SENDING, locked_by=worker_id)


def _finish(message_id: int, worker_id: str, attempts: list[DeliveryAttempt], **changes: object) -> bool:
    with transaction.atomic():
        updated = _held([message_id], worker_id).update(locked_by="", locked_until=None, **changes)
        # The tries happened whatever became of the lease: record them either way.
        DeliveryAttempt.objects.bulk_create(attempts)
    return updated == 1


def outbox_mark_sent(*, message_id: int, worker_id: str, now: datetime, attempts: list[DeliveryAttempt]) -> bool:
    """Record a successful delivery. Return False if the lease had been lost."""
    return _finish(
        message_id, worker_id, attempts, status=OutboxStatus.SENT, sent_at=now, last_error="", updated_at=now
    )


def outbox_mark_retry(
    *,
    message_id: int,
    worker_id: str,
    now: datetime,
    available_at: datetime,
    error: str,
    attempts: list[DeliveryAttempt],
) -> bool:
    """Put a transiently failed message back in the queue until `available_at`."""
    return _finish(
        message_id,
        worker_id,
        attempts,
        status=OutboxStatus.PENDING,
        available_at=available_at,
        last_error=error,
        updated_at=now,
    )


def outbox_mark_failed(
    *, message_id: int, worker_id: str, now: datetime, error: str, attempts: list[DeliveryAttempt]
) -> bool:
    """Give up on a message: a permanent error, or its attempt budget is spent."""
    return _finish(message_id, worker_id, attempts, status=OutboxStatus.FAILED, last_error=error, updated_at=now)


def outbox_release(*, message_ids: Iterable[int], worker_id: str, now: datetime) -> int:
    """Hand back claimed messages this worker never started: due now, claim not counted."""
    return _held(message_ids, worker_id).update(
        status=OutboxStatus.PENDING,
        locked_by="",
        locked_until=None,
        attempts=F("attempts") - 1,
        updated_at=now,
    )


def outbox_extend_lease(*, message_ids: Iterable[int], worker_id: str, now: datetime, lease_seconds: float) -> int:
    """Push the lease of rows this worker still holds; return how many it holds."""
    return _held(message_ids, worker_id).update(locked_until=now + timedelta(seconds=lease_seconds))
