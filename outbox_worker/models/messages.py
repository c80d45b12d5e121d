"""The outbox tables proper: one row per email to send, one row per delivery try."""

from django.db import models
from django.db.models import Exists, ExpressionWrapper, OuterRef, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Lower, Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from .workers import WorkerHeartbeat


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
