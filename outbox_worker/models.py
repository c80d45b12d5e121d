"""The outbox tables: one row per email to send, one row per delivery try."""

from datetime import timedelta

from django.db import models
from django.db.models import Exists, OuterRef, Q, QuerySet
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
    message_id = models.CharField(_("Message-ID"), max_length=255, unique=True)

    status = models.CharField(_("status"), max_length=16, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    # Deliveries started, including one cut short by a crashed worker. Counted
    # when the worker marks the row started (`started_at`), not at claim: rows
    # a crashed worker had claimed but not started come back without a charge.
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    # Set (by the database clock) when the current holder is about to send this
    # row; cleared by the next claim. A row that comes back from a dead worker
    # with it set was in flight when that worker died.
    started_at = models.DateTimeField(_("send started at"), null=True, blank=True)
    # How many workers died while this row was in flight. A message that kills
    # the worker twice is failed alone instead of crash-looping its neighbours.
    interruptions = models.PositiveSmallIntegerField(_("interruptions"), default=0)
    max_attempts = models.PositiveIntegerField(_("maximum attempts"), default=5)
    available_at = models.DateTimeField(_("next attempt"), default=timezone.now)
    locked_by = models.CharField(_("worker"), max_length=128, blank=True)
    locked_until = models.DateTimeField(_("leased until"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)

    kind = models.CharField(_("kind"), max_length=64, blank=True)
    # What caused the email, as "app_label.model:pk" (e.g. "shop.order:42").
    source = models.CharField(_("source"), max_length=128, blank=True, db_index=True)
    # One business event enqueues at most one message: a second enqueue with
    # the same key is refused by the database, not by a racy check.
    dedup_key = models.CharField(_("deduplication key"), max_length=255, unique=True)
    resent_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resends")

    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        ordering = ["-created_at", "-id"]
        permissions = [("resend_outboxmessage", _("Can resend outbox messages"))]
        indexes = [
            # The claim query reads only these rows; finished rows (the vast
            # majority over time) stay out of the index entirely.
            models.Index(
                fields=["available_at", "id"],
                name="outbox_due_idx",
                condition=Q(status="pending"),
            ),
            models.Index(
                fields=["locked_until"],
                name="outbox_lease_idx",
                condition=Q(status="sending"),
            ),
            models.Index(fields=["status", "-created_at"], name="outbox_status_created_idx"),
            # The admin changelist: newest first unfiltered, by kind, or by date,
            # without sorting the whole table for every page.
            models.Index(fields=["-created_at", "-id"], name="outbox_created_idx"),
            models.Index(fields=["kind", "-created_at"], name="outbox_kind_created_idx"),
            # Searching the admin for a student's address is an index lookup,
            # not a scan (see selectors.outbox_search).
            models.Index(Lower(KeyTextTransform("0", "to")), name="outbox_first_recipient_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject} → {', '.join(self.to)}"

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
