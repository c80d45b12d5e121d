"""The outbox tables: one row per email to send, one row per delivery try."""

from datetime import datetime

from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class OutboxStatus(models.TextChoices):
    PENDING = "pending", _("pendente")
    SENDING = "sending", _("enviando")
    SENT = "sent", _("enviado")
    FAILED = "failed", _("falhou")
    CANCELLED = "cancelled", _("cancelado")


class OutboxMessage(models.Model):
    """An email waiting to be sent, or the record of one that was.

    A row carries everything needed to build the email, so the worker never
    reads the domain tables. While a worker holds a row, `status` is
    `sending`, `locked_by` names the worker and `locked_until` is the lease
    expiry: after that moment any worker may take the row again.
    """

    from_email = models.CharField(_("remetente"), max_length=320)
    to = models.JSONField(_("para"), default=list)
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    reply_to = models.JSONField(_("responder para"), default=list, blank=True)
    subject = models.CharField(_("assunto"), max_length=998)
    body_text = models.TextField(_("texto"))
    body_html = models.TextField(_("HTML"), blank=True)
    headers = models.JSONField(_("cabeçalhos"), default=dict, blank=True)
    # Fixed at enqueue so every retry carries the same Message-ID: a receiving
    # server (and the student's mail client) can then recognise a duplicate.
    message_id = models.CharField(_("Message-ID"), max_length=255)

    status = models.CharField(_("situação"), max_length=16, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    # Deliveries started (claims), including one cut short by a crashed worker.
    attempts = models.PositiveIntegerField(_("tentativas"), default=0)
    max_attempts = models.PositiveIntegerField(_("máximo de tentativas"), default=5)
    available_at = models.DateTimeField(_("próxima tentativa"), default=timezone.now)
    locked_by = models.CharField(_("worker"), max_length=128, blank=True)
    locked_until = models.DateTimeField(_("reservado até"), null=True, blank=True)
    last_error = models.TextField(_("último erro"), blank=True)

    kind = models.CharField(_("tipo"), max_length=64, blank=True)
    # What caused the email, as "app_label.model:pk" (e.g. "enrollments.enrollment:42").
    source = models.CharField(_("origem"), max_length=128, blank=True)
    # One business event enqueues at most one message: a second enqueue with
    # the same key is refused by the database, not by a racy check.
    dedup_key = models.CharField(_("chave de deduplicação"), max_length=255)
    resent_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resends", db_index=False
    )

    created_at = models.DateTimeField(_("criado em"), default=timezone.now)
    updated_at = models.DateTimeField(_("atualizado em"), auto_now=True)
    sent_at = models.DateTimeField(_("enviado em"), null=True, blank=True)

    class Meta:
        verbose_name = _("mensagem da outbox")
        verbose_name_plural = _("mensagens da outbox")
        ordering = ["-created_at", "-id"]
        permissions = [("resend_outboxmessage", _("Pode reenviar mensagens da outbox"))]
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
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject} → {', '.join(self.to)}"

    def is_held(self, now: datetime) -> bool:
        """Whether a worker's lease on this row is live: operators must not touch it."""
        return self.status == OutboxStatus.SENDING and self.locked_until is not None and self.locked_until > now


class AttemptOutcome(models.TextChoices):
    SENT = "sent", _("enviado")
    TRANSIENT = "transient", _("erro temporário")
    PERMANENT = "permanent", _("erro permanente")
    ABANDONED = "abandoned", _("abandonado")


class DeliveryAttempt(models.Model):
    """One conversation with the email backend about one message."""

    message = models.ForeignKey(OutboxMessage, on_delete=models.CASCADE, related_name="delivery_attempts")
    attempt = models.PositiveIntegerField(_("tentativa"))
    try_number = models.PositiveIntegerField(_("envio"), default=1)
    worker = models.CharField(max_length=128)
    started_at = models.DateTimeField(_("início"))
    finished_at = models.DateTimeField(_("fim"))
    outcome = models.CharField(_("resultado"), max_length=16, choices=AttemptOutcome.choices)
    smtp_code = models.PositiveSmallIntegerField(_("código SMTP"), null=True, blank=True)
    error = models.TextField(_("erro"), blank=True)

    class Meta:
        verbose_name = _("tentativa de entrega")
        verbose_name_plural = _("tentativas de entrega")
        ordering = ["started_at", "id"]
        indexes = [
            # The admin's health panel reads the last 24 h of attempts (chart,
            # failures, workers seen) without scanning older history.
            models.Index(fields=["finished_at"], name="outbox_attempt_finished_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} #{self.attempt}.{self.try_number} {self.outcome}"


class WorkerHeartbeat(models.Model):
    """A running worker process, refreshed every lease/3 seconds while it lives.

    Lets operators see which workers are alive even when there is nothing to
    send; the row is removed on a clean shutdown and goes stale on a crash.
    """

    worker_id = models.CharField(_("worker"), max_length=128, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(_("iniciado em"))
    last_seen_at = models.DateTimeField(_("visto por último em"), db_index=True)

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return self.worker_id
