"""The outbox app's tables, one module per concern; import them from here.

- messages: the emails (OutboxMessage) and each try at delivering one (DeliveryAttempt);
- workers: the workers' heartbeats and the one definition of a live worker;
- tasks: the Django Tasks queue (OutboxTask);
- tracking: what providers report afterwards (DeliveryEvent) and the suppression list.
"""

from .messages import (
    DELIVERY_STATUS_RANK,
    AttemptOutcome,
    DeliveryAttempt,
    DeliveryStatus,
    OutboxMessage,
    OutboxStatus,
    held_by_live_worker,
    with_held,
)
from .tasks import OutboxTask, TaskStatus
from .tracking import DeliveryEvent, Suppression, SuppressionQuerySet, SuppressionReason
from .workers import (
    WorkerHeartbeat,
    WorkerHeartbeatQuerySet,
    alive_worker_sql,
    database_now_plus_sql,
    database_now_sql,
    worker_stale_after,
)

__all__ = [
    "DELIVERY_STATUS_RANK",
    "AttemptOutcome",
    "DeliveryAttempt",
    "DeliveryEvent",
    "DeliveryStatus",
    "OutboxMessage",
    "OutboxStatus",
    "OutboxTask",
    "Suppression",
    "SuppressionQuerySet",
    "SuppressionReason",
    "TaskStatus",
    "WorkerHeartbeat",
    "WorkerHeartbeatQuerySet",
    "alive_worker_sql",
    "database_now_plus_sql",
    "database_now_sql",
    "held_by_live_worker",
    "with_held",
    "worker_stale_after",
]
