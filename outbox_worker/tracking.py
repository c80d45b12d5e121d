"""Delivery events from the provider: what happened after it accepted a message.

django-anymail turns each provider's webhook (Postmark, Resend, SendGrid, …)
into one `AnymailTrackingEvent` and sends its `tracking` signal after
authenticating the request (its WEBHOOK_SECRET basic auth, plus the
provider's signature where it has one). `on_tracking_event` receives it and
`delivery_event_record` stores it against its OutboxMessage: one short
transaction per event, never touching the delivery path.

- Idempotent: an event is stored once per (provider, event id); a replay is
  ignored. Postmark gives no id to delivery events, so one is derived from
  what identifies them (see `event_key`).
- An event for an unknown message is stored unlinked: harmless.
- The message's `delivery_status` moves only up the rank (models.DELIVERY_STATUS_RANK),
  so events arriving out of order cannot turn a bounce back into "delivered".
- A hard bounce or a complaint suppresses the recipient (suppression.py).
"""

import hashlib
import json
import logging
from typing import Any

from anymail.signals import AnymailTrackingEvent, EventType, tracking
from django.db import DatabaseError, IntegrityError, transaction
from django.dispatch import receiver
from django.utils import timezone

from .logevents import log_event
from .models import DELIVERY_STATUS_RANK, DeliveryEvent, DeliveryStatus, OutboxMessage, SuppressionReason
from .suppression import suppression_add

logger = logging.getLogger("outbox_worker.tracking")

# Stored payloads are for a human reading one event, not an archive.
MAX_PAYLOAD_CHARS = 8000
MAX_ID = 2**63 - 1

# The verdicts that put the recipient on the suppression list.
SUPPRESSED_BY = {
    DeliveryStatus.BOUNCED: SuppressionReason.HARD_BOUNCE,
    DeliveryStatus.COMPLAINED: SuppressionReason.COMPLAINT,
}

# Hard or soft is not in anymail's normalized event (both are BOUNCED with
# reject_reason "bounced"); each provider says it in its own field.
_SOFT_BOUNCE_TYPES = {
    "postmark": lambda e: e.get("Type") in ("SoftBounce", "Transient", "DnsError"),
    "resend": lambda e: ((e.get("data") or {}).get("bounce") or {}).get("type") == "Transient",
    "sendgrid": lambda e: e.get("type") == "blocked",
    "mailgun": lambda e: e.get("severity") == "temporary",
}


def is_soft_bounce(provider: str, esp_event: Any) -> bool:
    """Whether a bounce is temporary by the provider's own field (unknown providers: a bounce is hard)."""
    check = _SOFT_BOUNCE_TYPES.get(provider)
    try:
        return bool(check and isinstance(esp_event, dict) and check(esp_event))
    except (AttributeError, TypeError):
        return False


def delivery_status_for(provider: str, event: AnymailTrackingEvent) -> str:
    """The DeliveryStatus an event gives its message, or "" when it says nothing about delivery (open, click…)."""
    if event.event_type == EventType.DELIVERED:
        return DeliveryStatus.DELIVERED
    if event.event_type == EventType.DEFERRED:
        return DeliveryStatus.DEFERRED
    if event.event_type == EventType.BOUNCED:
        return DeliveryStatus.SOFT_BOUNCED if is_soft_bounce(provider, event.esp_event) else DeliveryStatus.BOUNCED
    if event.event_type == EventType.COMPLAINED:
        return DeliveryStatus.COMPLAINED
    if event.event_type in (EventType.REJECTED, EventType.FAILED):
        return DeliveryStatus.REJECTED
    return ""


def event_key(provider: str, event: AnymailTrackingEvent) -> str:
    """The provider's event id, or (when it gives none) a digest of what makes the event itself."""
    if event.event_id:
        return str(event.event_id)[:255]
    timestamp = event.timestamp.isoformat() if event.timestamp else ""
    parts = [provider, str(event.event_type), event.message_id or "", event.recipient or "", timestamp]
    return "derived:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _message_for(event: AnymailTrackingEvent) -> OutboxMessage | None:
    # Our own id, echoed in the metadata, is there even when the webhook beats
    # the worker's write of the provider's id; the provider's id is the fallback.
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    outbox_id = str(metadata.get("outbox_id", ""))
    if outbox_id.isdigit() and int(outbox_id) <= MAX_ID:
        message = OutboxMessage.objects.filter(pk=int(outbox_id)).first()
        if message is not None:
            return message
    if event.message_id and isinstance(event.message_id, str):
        return OutboxMessage.objects.filter(provider_message_id=event.message_id).order_by("-pk").first()
    return None


def _trimmed(esp_event: Any) -> dict:
    if not isinstance(esp_event, dict):
        return {}
    text = json.dumps(esp_event, default=str)
    if len(text) <= MAX_PAYLOAD_CHARS:
        return json.loads(text)
    return {"truncated": True, "head": text[:MAX_PAYLOAD_CHARS]}


def delivery_event_record(*, provider: str, event: AnymailTrackingEvent) -> DeliveryEvent | None:
    """Store one tracking event and apply it; return the stored row, or None for a replay."""
    provider = provider.lower()
    status = delivery_status_for(provider, event)
    occurred_at = event.timestamp or timezone.now()
    with transaction.atomic():
        message = _message_for(event)
        try:
            with transaction.atomic():
                stored = DeliveryEvent.objects.create(
                    message=message,
                    provider=provider,
                    event_id=event_key(provider, event),
                    event_type=str(event.event_type)[:32],
                    provider_message_id=str(event.message_id or "")[:255],
                    recipient=(event.recipient or "")[:320],
                    occurred_at=occurred_at,
                    delivery_status=status,
                    reject_reason=str(event.reject_reason or "")[:32],
                    description=event.description or "",
                    mta_response=event.mta_response or "",
                    payload=_trimmed(event.esp_event),
                )
        except IntegrityError:
            log_event(
                logger, logging.INFO, "outbox.event_replayed", provider=provider, event=event_key(provider, event)
            )
            return None
        if message is not None and status:
            lower_or_equal = [s for s, rank in DELIVERY_STATUS_RANK.items() if rank <= DELIVERY_STATUS_RANK[status]]
            OutboxMessage.objects.filter(pk=message.pk, delivery_status__in=lower_or_equal).update(
                delivery_status=status, delivery_status_at=occurred_at
            )
        reason = SUPPRESSED_BY.get(status)
        if reason and event.recipient:
            detail = event.mta_response or event.description or ""
            suppression_add(address=event.recipient, reason=reason, detail=detail, event=stored)
    log_event(
        logger, logging.INFO, "outbox.event", provider=provider, id=message.pk if message else None,
        type=str(event.event_type), delivery=status or None, linked=message is not None,
    )  # fmt: skip
    return stored


@receiver(tracking, dispatch_uid="outbox_worker.tracking")
def on_tracking_event(sender: object, event: AnymailTrackingEvent, esp_name: str, **kwargs: object) -> None:
    """anymail's `tracking` signal: record the event.

    A database error propagates (the webhook answers 500 and the provider
    retries later on its own schedule; a replay is harmless). Anything else is
    a payload we cannot handle, which no retry would fix: log it, answer 200.
    """
    try:
        delivery_event_record(provider=esp_name, event=event)
    except DatabaseError:
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring: never a retry storm over a payload we cannot read
        log_event(logger, logging.ERROR, "outbox.event_failed", provider=esp_name, error=repr(exc))
