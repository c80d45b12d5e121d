"""The outbox tables: one row per email to send, one row per delivery try."""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Exists, ExpressionWrapper, OuterRef, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Lower, Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from .conf import outbox_settings


class OutboxStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    SENDING = "sending", _("sending")
    SENT = "sent", pgettext_lazy("status", "sent")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")
    # Not sent: a recipient is on the suppression list (hard bounce or spam
    # complaint). Held, never claimed; an operator lifts the suppression and resends.
    SUPPRESSED = "suppressed", _("suppressed")


class DeliveryStatus(models.TextChoices):
    """What the provider told us after accepting a message (blank: nothing yet)."""

    DEFERRED = "deferred", _("delivery delayed")
    SOFT_BOUNCED = "soft_bounced", _("bounced (temporary)")
    DELIVERED = "delivered", _("delivered")
    BOUNCED = "bounced", _("bounced")
    REJECTED = "rejected", _("rejected by the provider")
    COMPLAINED = "complained", _("marked as spam")


# Events arrive out of order (a delivery after a delay notice, a bounce after a
# "delivered" from a relay): a status only replaces one of lower or equal rank.
DELIVERY_STATUS_RANK = {
    "": 0,
    DeliveryStatus.DEFERRED: 1,
    DeliveryStatus.SOFT_BOUNCED: 2,
    DeliveryStatus.DELIVERED: 3,
    DeliveryStatus.BOUNCED: 4,
    DeliveryStatus.REJECTED: 4,
    DeliveryStatus.COMPLAINED: 5,
}


class OutboxMessage(models.Model):
    """An email waiting to be sent, or the record of one that was.

    A row carries everything needed to build the email, so the worker never
    reads the domain tables. While a worker holds a row, `status` is
    `sending`, `locked_by` names the worker and `locked_until` is the lease
    expiry: after that moment any worker may take the row again.
    """

    from_email = models.CharField(_("sender"), max_length=320)
    to = models.JSONField(_("to"), default=list)
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    reply_to = models.JSONField(_("reply to"), default=list, blank=True)
    subject = models.CharField(_("subject"), max_length=998)
    body_text = models.TextField(_("text"))
    body_html = models.TextField(_("HTML"), blank=True)
    headers = models.JSONField(_("headers"), default=dict, blank=True)
    # Fixed at enqueue so every retry carries the same Message-ID: a receiving
    # server (and the student's mail client) can then recognise a duplicate.
    message_id = models.CharField(_("Message-ID"), max_length=255)

    status = models.CharField(_("status"), max_length=16, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    # Deliveries started, including one cut short by a crashed worker. Counted
    # when the worker marks the row started (`started_at`), not at claim: rows
    # a crashed worker had claimed but not started come back without a charge.
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    # Set (by the database clock) when the current holder is about to send this
    # row; cleared by the next claim. A row that comes back from a dead worker
    # with it set was in flight when that worker died.
    started_at = models.DateTimeField(_("send started at"), null=True, blank=True)
    # How many workers died while this row was in flight (marked started, no outcome written yet).
    interruptions = models.PositiveSmallIntegerField(_("interruptions"), default=0)
    # Whether the current attempt was marked started as the only message of its
    # group; cleared by the next claim. Messages are marked in groups
    # (OUTBOX_FINISH_EVERY), so a death with a group in flight says little of
    # each member; a death with this message in flight alone says it may be the one.
    started_solo = models.BooleanField(_("started alone"), default=False)
    # Deaths while it was in flight alone: the evidence that it kills workers.
    # At two it is failed alone (outcomes.quarantine_reason), never its neighbours.
    solo_interruptions = models.PositiveSmallIntegerField(_("interruptions while alone"), default=0)
    max_attempts = models.PositiveIntegerField(_("maximum attempts"), default=5)
    available_at = models.DateTimeField(_("next attempt"), default=timezone.now)
    locked_by = models.CharField(_("worker"), max_length=128, blank=True)
    locked_until = models.DateTimeField(_("leased until"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)

    kind = models.CharField(_("kind"), max_length=64, blank=True)
    # What caused the email, as "app_label.model:pk" (e.g. "shop.order:42").
    source = models.CharField(_("source"), max_length=128, blank=True)
    # One business event enqueues at most one message: a second enqueue with
    # the same key is refused by the database, not by a racy check.
    dedup_key = models.CharField(_("deduplication key"), max_length=255)
    resent_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resends", db_index=False
    )
    # The id the HTTP email API gave the message when it accepted it (anymail's
    # `anymail_status.message_id`); blank over SMTP. Webhook events name it.
    provider_message_id = models.CharField(_("provider id"), max_length=255, blank=True)
    # The provider's latest verdict after "sent" (tracking.delivery_event_record);
    # a column, not a query over events, so the list, its filter and the API read it for free.
    delivery_status = models.CharField(
        _("delivery"), max_length=16, choices=DeliveryStatus.choices, blank=True, default=""
    )
    delivery_status_at = models.DateTimeField(_("delivery reported at"), null=True, blank=True)

    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        ordering = ["-created_at", "-id"]
        permissions = [("resend_outboxmessage", _("Can resend outbox messages"))]
        # Every index here is written by each enqueue (or, if partial, by the rows it
        # covers); each one is here because a query uses it — docs/benchmarks-issue8.md
        # lists which. Uniqueness is a constraint, not `unique=True`: on PostgreSQL
        # that adds a second, `varchar_pattern_ops` index for LIKE that nothing runs.
        constraints = [
            # Fixed per message, looked up by the admin search (selectors.outbox_search).
            models.UniqueConstraint(fields=["message_id"], name="outbox_message_id_uniq"),
            # One business event enqueues at most one message (see dedup_key).
            models.UniqueConstraint(fields=["dedup_key"], name="outbox_dedup_key_uniq"),
        ]
        indexes = [
            # The claim query reads only these rows; finished rows (the vast
            # majority over time) stay out of the index entirely.
            models.Index(
                fields=["available_at", "id"],
                name="outbox_due_idx",
                condition=Q(status="pending"),
            ),
            # Also the claim's expired leases (status = sending: a few rows per
            # worker), the health checks and the admin's filter by status.
            models.Index(fields=["status", "-created_at"], name="outbox_status_created_idx"),
            # The admin changelist: newest first unfiltered, by kind, or by date,
            # without sorting the whole table for every page.
            models.Index(fields=["-created_at", "-id"], name="outbox_created_idx"),
            models.Index(fields=["kind", "-created_at"], name="outbox_kind_created_idx"),
            # Searching the admin for a student's address is an index lookup,
            # not a scan (see selectors.outbox_search).
            models.Index(Lower(KeyTextTransform("0", "to")), name="outbox_first_recipient_idx"),
            # A source's messages (the enrollment page, the admin search by enrollment number).
            models.Index(fields=["source"], name="outbox_source_idx"),
            # A message's resends (admin page) and prune's SET NULL. Only resends have
            # a resent_from, so ordinary enqueues write nothing to this index.
            models.Index(fields=["resent_from"], name="outbox_resent_from_idx", condition=Q(resent_from__isnull=False)),
            # A webhook event finds its message by the provider's id. Partial: SMTP
            # sends have none, so they write nothing here (and no `_like` twin).
            models.Index(
                fields=["provider_message_id"], name="outbox_provider_id_idx", condition=~Q(provider_message_id="")
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject} → {', '.join(self.to)}"

    def delivery_label(self) -> str:
        """The truthful state for an operator: the provider's verdict once there is one, else the outbox status."""
        if self.delivery_status:
            return DeliveryStatus(self.delivery_status).label
        return OutboxStatus(self.status).label

    def is_held(self) -> bool:
        """Whether a live worker holds this row now (see `held_by_live_worker`): operators must not touch it."""
        return (
            self.status == OutboxStatus.SENDING
            and type(self).objects.filter(held_by_live_worker(), pk=self.pk).exists()
        )


def held_by_live_worker() -> Q:
    """Condition: a live worker holds the row, so nobody else may touch it.

    The complement of what the claim takes back (claim.py): the lease has not
    run out and the holder's heartbeat is alive, both by the database clock.
    The admin, outbox_status and the services' guarded updates all use this.
    """
    holder_alive = WorkerHeartbeat.objects.alive().filter(worker_id=OuterRef("locked_by"))
    return Q(status=OutboxStatus.SENDING, locked_until__gt=Now()) & Q(Exists(holder_alive))


def with_held(queryset: QuerySet["OutboxMessage"]) -> QuerySet["OutboxMessage"]:
    """`queryset` with `held` (held_by_live_worker) on each row, read in the same query."""
    return queryset.annotate(held=ExpressionWrapper(held_by_live_worker(), output_field=models.BooleanField()))


class AttemptOutcome(models.TextChoices):
    SENT = "sent", pgettext_lazy("status", "sent")
    TRANSIENT = "transient", _("temporary error")
    PERMANENT = "permanent", _("permanent error")
    ABANDONED = "abandoned", _("abandoned")


class DeliveryAttempt(models.Model):
    """One conversation with the email backend about one message."""

    message = models.ForeignKey(OutboxMessage, on_delete=models.CASCADE, related_name="delivery_attempts")
    attempt = models.PositiveIntegerField(_("attempt"))
    try_number = models.PositiveIntegerField(_("try"), default=1)
    worker = models.CharField(max_length=128)
    started_at = models.DateTimeField(_("start"))
    finished_at = models.DateTimeField(_("end"))
    outcome = models.CharField(_("outcome"), max_length=16, choices=AttemptOutcome.choices)
    smtp_code = models.PositiveSmallIntegerField(_("SMTP code"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("delivery attempt")
        verbose_name_plural = _("delivery attempts")
        ordering = ["started_at", "id"]
        indexes = [
            # The admin's health panel reads the last 24 h of attempts (chart,
            # failures, workers seen) without scanning older history.
            models.Index(fields=["finished_at"], name="outbox_attempt_finished_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} #{self.attempt}.{self.try_number} {self.outcome}"


def worker_stale_after() -> timedelta:
    """How long a worker may go without a heartbeat before it counts as dead."""
    return timedelta(seconds=outbox_settings.WORKER_STALE_AFTER)


class WorkerHeartbeatQuerySet(QuerySet):
    """The one definition of a live worker, judged by the database clock.

    A worker is alive while its heartbeat is newer than `worker_stale_after()`
    by the database's own clock, so workers (and the admin) whose clocks differ
    still agree. The claim statement says the same thing in SQL
    (`alive_worker_sql`); both are built here so they cannot drift apart.
    """

    def alive(self) -> "WorkerHeartbeatQuerySet":
        return self.filter(stopped_at__isnull=True, last_seen_at__gte=Now() - worker_stale_after())

    def stale(self) -> "WorkerHeartbeatQuerySet":
        return self.filter(last_seen_at__lt=Now() - worker_stale_after())

    def stopped(self) -> "WorkerHeartbeatQuerySet":
        """Workers that shut down cleanly (SIGTERM, end of --once)."""
        return self.filter(stopped_at__isnull=False)

    def dead(self) -> "WorkerHeartbeatQuerySet":
        """Workers that went silent without stopping: killed, or their host lost."""
        return self.stale().filter(stopped_at__isnull=True)


def database_now_sql(vendor: str) -> str:
    """SQL for "now" by the database clock, comparable with stored datetimes.

    PostgreSQL: the statement's start (not the transaction's, which a long
    transaction would freeze). SQLite: its CURRENT_TIMESTAMP has no fraction
    and a different shape from the text Django stores, which is compared as
    text; so build Django's shape, to the end of the current millisecond
    (SQLite has no finer clock), or a row stored a few microseconds ago by
    Python would not yet be due.
    """
    if vendor == "postgresql":
        return "statement_timestamp()"
    return "(strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now') || '999')"


def database_now_plus_sql(vendor: str, seconds_param: str) -> str:
    """SQL for "now + %(seconds_param)s seconds" by the database clock (a negative value goes back)."""
    if vendor == "postgresql":
        return f"(statement_timestamp() + make_interval(secs => %({seconds_param})s))"
    return f"(strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', printf('%%+f seconds', %({seconds_param})s)) || '999')"


def alive_worker_sql(vendor: str, *, worker_column: str, stale_param: str) -> str:
    """SQL condition: the worker named by `worker_column` has a live heartbeat (see WorkerHeartbeatQuerySet).

    `stale_param` names a parameter the caller sets to `-worker_stale_after()` in seconds.
    """
    table = WorkerHeartbeat._meta.db_table
    return (
        f"EXISTS (SELECT 1 FROM {table} AS heartbeat WHERE heartbeat.worker_id = {worker_column} "
        f"AND heartbeat.stopped_at IS NULL AND heartbeat.last_seen_at >= {database_now_plus_sql(vendor, stale_param)})"
    )


class WorkerHeartbeat(models.Model):
    """A running worker process, refreshed every few seconds while it lives.

    Liveness has one meaning everywhere (`WorkerHeartbeat.objects.alive()`):
    the claim takes back the rows of a worker whose heartbeat went stale, and
    operators see the same workers as alive. A clean shutdown sets
    `stopped_at`; a crash leaves the row to go stale. Either way operators see
    when the worker was last seen, until outbox_prune removes the row.
    """

    worker_id = models.CharField(_("worker"), max_length=128, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(_("started at"))
    last_seen_at = models.DateTimeField(_("last seen at"), db_index=True)
    # Set while the worker holds delivery back because the provider fails us
    # (provider.ProviderGate); operators see it in outbox_status and the admin.
    paused_since = models.DateTimeField(_("delivery paused since"), null=True, blank=True)
    pause_reason = models.TextField(_("pause reason"), blank=True)
    stopped_at = models.DateTimeField(_("stopped at"), null=True, blank=True)

    objects = WorkerHeartbeatQuerySet.as_manager()

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return self.worker_id


class TaskStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


class OutboxTask(models.Model):
    """A Django Tasks task waiting to run, or the record of one that ran (see tasks.py).

    Same claim discipline as OutboxMessage (claim.py): `running` with
    `locked_by`/`locked_until` while a worker holds it, `started_at` and
    `attempts + 1` when a run begins, `interruptions` when its worker died
    mid-run. The arguments are JSON, checked at enqueue.
    """

    # Dotted path of the module-level `@task` object, e.g. "backend.enrollments.tasks.notify_staff".
    task_path = models.CharField(_("task"), max_length=255)
    backend = models.CharField(_("backend"), max_length=64, default="default")
    queue_name = models.CharField(_("queue"), max_length=64, default="default")
    # Higher runs first (Django Tasks: -100 … 100).
    priority = models.SmallIntegerField(_("priority"), default=0)
    args = models.JSONField(_("arguments"), default=list, blank=True)
    kwargs = models.JSONField(_("keyword arguments"), default=dict, blank=True)

    status = models.CharField(_("status"), max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    max_attempts = models.PositiveIntegerField(_("maximum attempts"), default=5)
    started_at = models.DateTimeField(_("run started at"), null=True, blank=True)
    interruptions = models.PositiveSmallIntegerField(_("interruptions"), default=0)
    # As OutboxMessage's; a task always runs alone, so every interruption is a solo one.
    started_solo = models.BooleanField(_("started alone"), default=False)
    solo_interruptions = models.PositiveSmallIntegerField(_("interruptions while alone"), default=0)
    available_at = models.DateTimeField(_("due at"), default=timezone.now)
    locked_by = models.CharField(_("worker"), max_length=128, blank=True)
    locked_until = models.DateTimeField(_("held until"), null=True, blank=True)

    # One entry per failed run: {"exception_class_path": ..., "traceback": ...} (Django Tasks' TaskError).
    errors = models.JSONField(_("errors"), default=list, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    return_value = models.JSONField(_("return value"), null=True, blank=True)
    worker_ids = models.JSONField(_("workers"), default=list, blank=True)

    created_at = models.DateTimeField(_("enqueued at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    last_attempted_at = models.DateTimeField(_("last attempted at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("task")
        verbose_name_plural = _("tasks")
        ordering = ["-created_at", "-id"]
        indexes = [
            # The claim reads only due rows, highest priority first; finished
            # rows stay out of the index.
            models.Index(
                models.F("priority").desc(),
                "available_at",
                "id",
                name="outbox_task_due_idx",
                condition=Q(status="pending"),
            ),
            models.Index(fields=["locked_until"], name="outbox_task_lease_idx", condition=Q(status="running")),
            models.Index(fields=["-created_at", "-id"], name="outbox_task_created_idx"),
            models.Index(fields=["status", "-created_at"], name="outbox_task_status_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.task_path}"


class DeliveryEvent(models.Model):
    """One event a provider reported about a message it accepted (delivered, bounced, …).

    Stored even when no message matches (an id from before tracking, another
    system's email): harmless and kept for the record. `event_id` is unique
    per provider, so a replayed webhook is stored once.
    """

    message = models.ForeignKey(
        OutboxMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="delivery_events"
    )
    provider = models.CharField(_("provider"), max_length=32)
    event_id = models.CharField(_("event id"), max_length=255)
    event_type = models.CharField(_("event"), max_length=32)
    provider_message_id = models.CharField(_("provider id"), max_length=255, blank=True)
    recipient = models.CharField(_("recipient"), max_length=320, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"), null=True, blank=True)
    received_at = models.DateTimeField(_("received at"), default=timezone.now)
    # The verdict this event gave the message (DeliveryStatus), blank for opens, clicks, …
    delivery_status = models.CharField(_("delivery"), max_length=16, choices=DeliveryStatus.choices, blank=True)
    reject_reason = models.CharField(_("reason"), max_length=32, blank=True)
    description = models.TextField(_("description"), blank=True)
    mta_response = models.TextField(_("server response"), blank=True)
    payload = models.JSONField(_("provider data"), default=dict, blank=True)

    class Meta:
        verbose_name = _("delivery event")
        verbose_name_plural = _("delivery events")
        ordering = ["occurred_at", "id"]
        constraints = [models.UniqueConstraint(fields=["provider", "event_id"], name="outbox_event_once")]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} {self.provider_message_id}"


class SuppressionReason(models.TextChoices):
    HARD_BOUNCE = "hard_bounce", _("permanent bounce")
    COMPLAINT = "complaint", _("marked as spam")


class SuppressionQuerySet(QuerySet):
    def active(self) -> "SuppressionQuerySet":
        return self.filter(lifted_at__isnull=True)


class Suppression(models.Model):
    """An address the outbox will not send to: it bounced for good, or its owner marked us as spam.

    At most one active row per address (a partial unique index); lifting keeps
    the row, with who lifted it and when.
    """

    address = models.CharField(_("address"), max_length=320)  # lower case (suppression.normalize)
    reason = models.CharField(_("reason"), max_length=16, choices=SuppressionReason.choices)
    detail = models.TextField(_("detail"), blank=True)
    event = models.ForeignKey(DeliveryEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    lifted_at = models.DateTimeField(_("lifted at"), null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("lifted by"),
    )

    objects = SuppressionQuerySet.as_manager()

    class Meta:
        verbose_name = _("suppressed address")
        verbose_name_plural = _("suppressed addresses")
        ordering = ["-created_at", "-id"]
        permissions = [("lift_suppression", _("Can lift addresses from the suppression list"))]
        constraints = [
            models.UniqueConstraint(
                fields=["address"], condition=Q(lifted_at__isnull=True), name="outbox_one_active_suppression"
            )
        ]

    def __str__(self) -> str:
        return self.address
