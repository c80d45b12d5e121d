"""The suppression list: addresses the outbox will not send to, and the two places that respect it.

An address is suppressed by a hard bounce or a spam complaint
(tracking.delivery_event_record). A message to it is held as `suppressed`
with the reason instead of being sent. One place decides it: the claim, in
the claim's transaction, so a suppression that arrives while a message waits
is respected too. The enqueue does not look (the caller's business change
commits either way, and every enqueue would pay ~0.1 ms for a rare case), so
a message to a suppressed address reads `pending` until a worker claims it.
The check is one indexed lookup for a whole batch (the partial unique index on
active addresses), never a query per email. Lifting a suppression sends
nothing: the operator resends.
"""

import logging
import re
from collections.abc import Iterable, Sequence

from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from .logevents import log_event
from .models import DeliveryEvent, OutboxMessage, OutboxStatus, Suppression, SuppressionReason

logger = logging.getLogger("outbox_worker.suppression")


def normalize(address: str) -> str:
    """Return the form addresses are stored and compared in: the bare address, lower case."""
    address = address.strip()
    if address.endswith(">") and "<" in address:
        address = address.rsplit("<", 1)[1][:-1]
    return address.strip().lower()


def recipients(message: OutboxMessage) -> list[str]:
    return [normalize(address) for address in [*message.to, *message.cc, *message.bcc]]


def suppressions_for(addresses: Iterable[str]) -> dict[str, Suppression]:
    """Return the active suppression of each of `addresses` that has one, by normalized address."""
    wanted = {normalize(address) for address in addresses}
    if not wanted:
        return {}
    return {s.address: s for s in Suppression.objects.active().filter(address__in=wanted)}


def suppressed_error(suppression: Suppression) -> str:
    """The text stored in a held message's `last_error`: the reason code first (`suppressed_reason` reads it back)."""
    detail = f": {suppression.detail}" if suppression.detail else ""
    return f"suppressed ({suppression.reason}) {suppression.address}{detail}"


_SUPPRESSED_ERROR = re.compile(r"^suppressed \((?P<reason>[a-z_]+)\) ")


def suppressed_reason(error: str) -> SuppressionReason | None:
    """The reason code in a `last_error` written by `suppressed_error`, or None for any other error."""
    match = _SUPPRESSED_ERROR.match(error)
    if match is None or match["reason"] not in SuppressionReason.values:
        return None
    return SuppressionReason(match["reason"])


def hold_suppressed_claims(messages: Sequence[OutboxMessage]) -> list[OutboxMessage]:
    """Hold the just-claimed messages with a suppressed recipient; return the others.

    Runs inside the claim's transaction: a crash leaves either the claim with
    its holds or neither. No attempt is charged (none was started).
    """
    found = suppressions_for(address for message in messages for address in recipients(message))
    if not found:
        return list(messages)
    keep = []
    for message in messages:
        hits = [found[address] for address in recipients(message) if address in found]
        if not hits:
            keep.append(message)
            continue
        OutboxMessage.objects.filter(pk=message.pk).update(
            status=OutboxStatus.SUPPRESSED,
            last_error=suppressed_error(hits[0]),
            locked_by="",
            locked_until=None,
            started_at=None,
            updated_at=Now(),
        )
        log_event(logger, logging.INFO, "outbox.suppressed", id=message.pk, reason=hits[0].reason, at="claim")
    return keep


def suppression_add(
    *, address: str, reason: SuppressionReason, detail: str = "", event: DeliveryEvent | None = None
) -> Suppression | None:
    """Suppress `address` unless it already is; return the new row, or None when it was already suppressed."""
    address = normalize(address)
    if not address or len(address) > Suppression._meta.get_field("address").max_length:
        return None  # nothing we could have sent to
    try:
        with transaction.atomic():
            suppression = Suppression.objects.create(address=address, reason=reason, detail=detail[:1000], event=event)
    except IntegrityError:  # already suppressed (the partial unique index), maybe by a concurrent event
        return None
    log_event(logger, logging.INFO, "outbox.suppression_added", address=address, reason=str(reason))
    return suppression


def suppression_lift(*, suppression_ids: Iterable[int], user_id: int | None) -> list[Suppression]:
    """Lift active suppressions; return those lifted. Nothing is sent: held messages wait for a resend."""
    lifted = []
    for suppression in Suppression.objects.active().filter(pk__in=list(suppression_ids)).order_by("pk"):
        # Guarded: two operators lifting at once lift (and log) it once.
        if Suppression.objects.active().filter(pk=suppression.pk).update(lifted_at=Now(), lifted_by_id=user_id):
            lifted.append(suppression)
            log_event(logger, logging.INFO, "outbox.suppression_lifted", address=suppression.address, user=user_id)
    return lifted
