"""Outbox reads for operators: the health numbers behind `outbox_status` (and the admin)."""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Min
from django.utils import timezone

from .models import OutboxMessage, OutboxStatus, WorkerHeartbeat


@dataclass(frozen=True)
class OutboxHealth:
    counts: dict[str, int]
    oldest_due_at: datetime | None
    oldest_due_age_seconds: float | None
    failed_last_hour: int
    workers: list[dict]
    checked_at: datetime

    def as_dict(self) -> dict:
        data = asdict(self)
        data["oldest_due_at"] = self.oldest_due_at.isoformat() if self.oldest_due_at else None
        data["checked_at"] = self.checked_at.isoformat()
        for worker in data["workers"]:
            worker["last_seen_at"] = worker["last_seen_at"].isoformat()
        return data


def outbox_health(*, now: datetime | None = None, workers_within: timedelta = timedelta(minutes=5)) -> OutboxHealth:
    """Return counts by status, the oldest due message, recent failures and live workers."""
    now = now or timezone.now()
    counts = {status: 0 for status in OutboxStatus.values}
    for row in OutboxMessage.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    # Both served by the partial indexes on due rows and on leases.
    oldest_pending = OutboxMessage.objects.filter(status=OutboxStatus.PENDING, available_at__lte=now).aggregate(
        at=Min("available_at")
    )["at"]
    oldest_expired = OutboxMessage.objects.filter(status=OutboxStatus.SENDING, locked_until__lt=now).aggregate(
        at=Min("available_at")
    )["at"]
    oldest = min((at for at in (oldest_pending, oldest_expired) if at is not None), default=None)
    failed_last_hour = OutboxMessage.objects.filter(
        status=OutboxStatus.FAILED, updated_at__gte=now - timedelta(hours=1)
    ).count()
    workers = list(
        WorkerHeartbeat.objects.filter(last_seen_at__gte=now - workers_within).values(
            "worker_id", "hostname", "pid", "last_seen_at"
        )
    )
    return OutboxHealth(
        counts=counts,
        oldest_due_at=oldest,
        oldest_due_age_seconds=(now - oldest).total_seconds() if oldest else None,
        failed_last_hour=failed_last_hour,
        workers=workers,
        checked_at=now,
    )
