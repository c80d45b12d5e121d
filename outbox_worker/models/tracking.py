"""What providers report after accepting a message: delivery events, and the suppression list they feed."""

from django.conf import settings
from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .messages import DeliveryStatus, OutboxMessage


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
