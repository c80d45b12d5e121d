"""The outbox's reads for operators: health for `outbox_status` and the admin, search, what an action would do.

The admin's queries are bounded so it stays fast on a table of millions of
rows: counts stop at a cap, time windows use indexed columns, and nothing
scans the whole table on every page load.
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count, Min, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Lower, TruncHour
from django.utils import timezone

from .models import (
    AttemptOutcome,
    DeliveryAttempt,
    OutboxMessage,
    OutboxStatus,
    WorkerHeartbeat,
    held_by_live_worker,
    with_held,
)
from .registry import outbox_registry
from .services import Refusal, cancel_refusal, requeue_refusal, resend_refusal, retry_now_refusal

# Counting stops here: "more than 10 000 sent" is all an operator needs, and
# counting a million rows on every page load is what makes admins slow.
COUNT_CAP = 10_000
CHART_HOURS = 24


@dataclass(frozen=True)
class OutboxHealth:
    counts: dict[str, int]
    oldest_due_at: datetime | None
    oldest_due_age_seconds: float | None
    failed_last_hour: int
    workers: list[dict]  # worker_id, hostname, pid, last_seen_at, paused_since, pause_reason
    checked_at: datetime

    @property
    def delivery_paused(self) -> bool:
        """Whether a live worker holds delivery back because the provider fails it (provider.ProviderGate)."""
        return any(worker["paused_since"] is not None for worker in self.workers)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["oldest_due_at"] = self.oldest_due_at.isoformat() if self.oldest_due_at else None
        data["checked_at"] = self.checked_at.isoformat()
        data["delivery_paused"] = self.delivery_paused
        for worker in data["workers"]:
            worker["last_seen_at"] = worker["last_seen_at"].isoformat()
            worker["paused_since"] = worker["paused_since"].isoformat() if worker["paused_since"] else None
        return data


def outbox_health(*, now: datetime | None = None) -> OutboxHealth:
    """Return counts by status, the oldest due message, recent failures and live workers (see WorkerHeartbeat)."""
    now = now or timezone.now()
    counts = {status: 0 for status in OutboxStatus.values}
    for row in OutboxMessage.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    # Both served by the partial indexes on due rows and on leases.
    oldest_pending = OutboxMessage.objects.filter(status=OutboxStatus.PENDING, available_at__lte=now).aggregate(
        at=Min("available_at")
    )["at"]
    # Rows nobody live holds come back at the next claim: they are due too.
    oldest_expired = (
        OutboxMessage.objects.filter(status=OutboxStatus.SENDING)
        .exclude(held_by_live_worker())
        .aggregate(at=Min("available_at"))["at"]
    )
    oldest = min((at for at in (oldest_pending, oldest_expired) if at is not None), default=None)
    failed_last_hour = OutboxMessage.objects.filter(
        status=OutboxStatus.FAILED, updated_at__gte=now - timedelta(hours=1)
    ).count()
    workers = list(
        WorkerHeartbeat.objects.alive().values(
            "worker_id", "hostname", "pid", "last_seen_at", "paused_since", "pause_reason"
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


# --- The admin's health panel ------------------------------------------------


@dataclass(frozen=True)
class CappedCount:
    value: int
    capped: bool  # True when the real number is larger than `value`


@dataclass(frozen=True)
class HourBucket:
    start: datetime
    sent: int
    failed: int


@dataclass(frozen=True)
class WorkerSeen:
    worker_id: str
    last_seen: datetime
    holding: int  # messages it holds right now (a live worker only)
    paused_since: datetime | None = None  # delivery held back: the provider fails this worker
    pause_reason: str = ""
    alive: bool = True  # by the heartbeat, as the claim judges it (WorkerHeartbeat.objects.alive())
    left_behind: int = 0  # `sending` rows a dead worker still names; the next claim takes them back
    stopped_at: datetime | None = None  # set by a clean shutdown; a dead worker (killed) has none

    @property
    def state(self) -> str:
        """ "alive", "stopped" (shut down cleanly) or "dead" (went silent: killed, or its host lost)."""
        if self.alive:
            return "alive"
        return "stopped" if self.stopped_at else "dead"


@dataclass
class OutboxDashboard:
    now: datetime
    counts: dict[str, CappedCount]
    due_now: int
    oldest_due_at: datetime | None
    failures_24h: int
    sent_24h: int
    workers: list[WorkerSeen] = field(default_factory=list)
    hours: list[HourBucket] = field(default_factory=list)
    stalled: CappedCount = CappedCount(0, False)

    @property
    def oldest_due_age(self) -> timedelta | None:
        return None if self.oldest_due_at is None else self.now - self.oldest_due_at

    @property
    def paused_workers(self) -> list[WorkerSeen]:
        return [worker for worker in self.workers if worker.alive and worker.paused_since is not None]

    @property
    def live_workers(self) -> list[WorkerSeen]:
        return [worker for worker in self.workers if worker.alive]

    @property
    def gone_workers(self) -> list[WorkerSeen]:
        """Stopped and dead workers, until outbox_prune removes them."""
        return [worker for worker in self.workers if not worker.alive]


def capped_count(queryset: QuerySet, cap: int | None = None) -> CappedCount:
    """Count at most `cap` (default COUNT_CAP) rows: `SELECT COUNT(*) FROM (… LIMIT cap + 1)`."""
    cap = COUNT_CAP if cap is None else cap
    value = queryset.order_by()[: cap + 1].count()
    return CappedCount(min(value, cap), value > cap)


def outbox_dashboard(*, now: datetime | None = None) -> OutboxDashboard:
    """Return the admin's health panel: backlog, failures, workers and 24 h of throughput, each query bounded."""
    now = now or timezone.now()
    since = now - timedelta(hours=CHART_HOURS)
    counts = {status: capped_count(OutboxMessage.objects.filter(status=status)) for status in OutboxStatus.values}
    # The partial index outbox_due_idx answers both of these.
    due = OutboxMessage.objects.filter(status=OutboxStatus.PENDING, available_at__lte=now)
    oldest_due_at = due.order_by("available_at", "id").values_list("available_at", flat=True).first()
    hours = outbox_hourly_deliveries(since=since, now=now)
    return OutboxDashboard(
        now=now,
        counts=counts,
        due_now=capped_count(due).value,
        oldest_due_at=oldest_due_at,
        failures_24h=sum(bucket.failed for bucket in hours),
        sent_24h=sum(bucket.sent for bucket in hours),
        workers=outbox_workers(now=now),
        hours=hours,
        stalled=outbox_stalled_count(),
    )


def outbox_hourly_deliveries(*, since: datetime, now: datetime) -> list[HourBucket]:
    """Return delivery tries per hour (local time) from `since` to `now`, oldest first, empty hours included.

    "failed" counts every try that did not deliver (temporary or permanent),
    so a retry storm shows up even before any message ends `failed`.
    """
    rows = (
        DeliveryAttempt.objects.filter(finished_at__gte=since, finished_at__lte=now)
        .annotate(hour=TruncHour("finished_at"))
        .values("hour", "outcome")
        .annotate(n=Count("id"))
        .order_by()
    )
    sent: dict[datetime, int] = {}
    failed: dict[datetime, int] = {}
    for row in rows:
        target = sent if row["outcome"] == AttemptOutcome.SENT else failed
        target[row["hour"]] = target.get(row["hour"], 0) + row["n"]
    first = timezone.localtime(since).replace(minute=0, second=0, microsecond=0)
    buckets = []
    hour = first
    while hour <= now:
        buckets.append(HourBucket(start=hour, sent=sent.get(hour, 0), failed=failed.get(hour, 0)))
        hour += timedelta(hours=1)
    return buckets


def outbox_workers(*, now: datetime) -> list[WorkerSeen]:
    """Return every worker with a heartbeat row, live ones first, then the stopped and dead, most recent first.

    Live means what it means to the claim (WorkerHeartbeat.objects.alive(),
    by the database clock). A stopped worker (clean shutdown) and a dead one
    (killed: its heartbeat went stale) stay listed with when they were last
    seen until outbox_prune removes them. `holding` counts the rows a live
    worker holds; `left_behind` the `sending` rows a gone one still names,
    which the next claim takes back.
    """
    alive_ids = set(WorkerHeartbeat.objects.alive().values_list("worker_id", flat=True))
    sending = OutboxMessage.objects.filter(status=OutboxStatus.SENDING).values("locked_by").order_by()
    holding = dict(sending.filter(held_by_live_worker()).annotate(n=Count("id")).values_list("locked_by", "n"))
    left_behind = dict(sending.exclude(held_by_live_worker()).annotate(n=Count("id")).values_list("locked_by", "n"))
    workers = [
        WorkerSeen(
            worker_id=beat.worker_id,
            last_seen=beat.last_seen_at,
            holding=holding.get(beat.worker_id, 0),
            paused_since=beat.paused_since if beat.worker_id in alive_ids else None,
            pause_reason=beat.pause_reason,
            alive=beat.worker_id in alive_ids,
            left_behind=left_behind.get(beat.worker_id, 0),
            stopped_at=beat.stopped_at,
        )
        for beat in WorkerHeartbeat.objects.order_by("-last_seen_at")
    ]
    return sorted(workers, key=lambda worker: not worker.alive)


def outbox_stalled_count() -> CappedCount:
    """Count `sending` rows nobody live holds (dead holder or run-out lease): they come back at the next claim."""
    return capped_count(OutboxMessage.objects.filter(status=OutboxStatus.SENDING).exclude(held_by_live_worker()))


# A loose index scan: each step asks the (kind, created_at) index for the next
# larger kind, so listing the few kinds costs a few index probes instead of a
# DISTINCT over every row. Plain SQL because the ORM cannot say it; it runs
# unchanged on PostgreSQL and SQLite.
_KINDS_SQL = f"""
WITH RECURSIVE kinds(kind) AS (
    SELECT MIN(kind) FROM {OutboxMessage._meta.db_table} WHERE kind > ''
    UNION ALL
    SELECT (SELECT MIN(kind) FROM {OutboxMessage._meta.db_table} WHERE kind > kinds.kind)
    FROM kinds WHERE kinds.kind IS NOT NULL
)
SELECT kind FROM kinds WHERE kind IS NOT NULL LIMIT %s
"""
MAX_KINDS = 100


def outbox_kinds() -> list[str]:
    """Return every non-empty kind in the outbox, sorted (at most MAX_KINDS)."""
    with connection.cursor() as cursor:
        cursor.execute(_KINDS_SQL, [MAX_KINDS])
        return [row[0] for row in cursor.fetchall()]


# "app_label.model:pk", the shape of a source.
_RAW_SOURCE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*:\S+$")
# "local@domain", the shape of both an address and a Message-ID written without <>.
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def first_recipient() -> Lower:
    """The first `to` address, lower-cased: the expression the outbox_first_recipient_idx index holds."""
    return Lower(KeyTextTransform("0", "to"))


def outbox_search(*, queryset: QuerySet[OutboxMessage], term: str) -> QuerySet[OutboxMessage]:
    """Filter `queryset` by an operator's search box input.

    Fast, exact forms (index lookups): the host project's shortcuts (see
    registry.py: e.g. a term naming the business object that caused the
    email), a raw source ("app_label.model:pk"), a whole email address (the
    first recipient, which for transactional email is the only one; or a
    Message-ID written without <>) and a Message-ID with <>. Anything else
    matches part of a recipient or the subject, which reads every row: fine
    on thousands, about a second per million.
    """
    term = term.strip()
    sources = outbox_registry().search_sources(term)
    if sources:
        return queryset.filter(source__in=sources)
    if _RAW_SOURCE.match(term):
        return queryset.filter(source=term)
    if term.startswith("<") and term.endswith(">"):
        return queryset.filter(message_id=term)
    if _ADDRESS.match(term):
        return queryset.alias(recipient=first_recipient()).filter(Q(recipient=term.lower()) | Q(message_id=f"<{term}>"))
    return queryset.filter(Q(to__icontains=term) | Q(subject__icontains=term))


# --- What an action would do, shown on its confirmation page ----------------


@dataclass(frozen=True)
class PlannedChange:
    message: OutboxMessage
    refusal: Refusal | None  # None: the action will change this message

    @property
    def allowed(self) -> bool:
        return self.refusal is None


# The services' own rules (services.py): the page cannot promise what the service then refuses.
_RULES: dict[str, Callable[[OutboxMessage, datetime], Refusal | None]] = {
    "resend": lambda message, now: resend_refusal(message=message, held=message.held),
    "retry_now": lambda message, now: retry_now_refusal(message=message, held=message.held, now=now),
    "cancel": lambda message, now: cancel_refusal(message=message, held=message.held),
    "requeue": lambda message, now: requeue_refusal(message=message, held=message.held),
}


def outbox_plan_for_message(*, action: str, message: OutboxMessage, now: datetime | None = None) -> PlannedChange:
    """Return what `action` would do to one message now (see outbox_action_plan)."""
    if not hasattr(message, "held"):
        message.held = message.is_held()
    return PlannedChange(message, _RULES[action](message, now or timezone.now()))


def outbox_action_plan(*, action: str, message_ids: Iterable[int], now: datetime | None = None) -> list[PlannedChange]:
    """Return, for each message, what `action` ("resend", "retry_now", "cancel", "requeue") would do to it now.

    Asks the rules the services ask, which decide again at the moment they
    run: a row a worker takes between the two is still refused.
    """
    now = now or timezone.now()
    rule = _RULES[action]
    messages = with_held(OutboxMessage.objects.filter(pk__in=list(message_ids)))
    return [
        PlannedChange(message, rule(message, now))
        for message in messages.defer("body_text", "body_html").order_by("pk")
    ]


def outbox_messages_for_source(*, source: str) -> QuerySet[OutboxMessage]:
    """Return the emails a business object caused (e.g. "shop.order:42"), newest first."""
    return OutboxMessage.objects.filter(source=source).defer("body_text", "body_html").order_by("-created_at", "-id")
