"""The suppression list: addresses the outbox will not send to, and the two places that respect it.

An address is suppressed by a hard bounce or a spam complaint
(tracking.delivery_event_record). A message to it is held as `suppressed`
with the reason instead of being sent: at enqueue (the caller's business
change still commits) and again at claim, so a suppression that arrives while
a message waits is respected too. Each check is one indexed lookup for a
whole batch (the partial unique index on active addresses), never a query per
email. Lifting a suppression sends nothing: the operator resends.
"""

import functools
import logging
import re
from collections.abc import Iterable, Sequence

from django.db import IntegrityError, connections, router, transaction
from django.db.models import F, Field
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


def insert_holding_suppressed(message: OutboxMessage) -> None:
    """INSERT an unsaved message, as `suppressed` if any recipient is on the list: one statement (outbox_enqueue).

    The lookup rides inside the INSERT (an EXISTS deciding the status)
    instead of costing a SELECT and a second round trip of its own; with the
    ORM building both statements, the two cost more than everything else an
    enqueue does (bench/run enqueue). The SQL is written here, from the
    model's fields, because the ORM cannot put a subquery in an INSERT and
    read the result back. Only a held message (rare) costs more: its reason
    is read and written after the INSERT, in the caller's transaction.
    """
    using = router.db_for_write(OutboxMessage)
    connection = connections[using]
    addresses = sorted(set(recipients(message)))
    sql, fields = _insert_statement(using, len(addresses), message.pk is None)
    params = []
    for field in fields:
        value = field.get_db_prep_save(field.pre_save(message, add=True), connection)
        if field.attname == "status" and addresses:
            params += [*addresses, OutboxStatus.SUPPRESSED.value, value]
        else:
            params.append(value)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        message.pk, message.status = cursor.fetchone()
    message._state.adding, message._state.db = False, using
    if message.status == OutboxStatus.SUPPRESSED:
        _record_hold(message, addresses)


@functools.lru_cache(maxsize=64)
def _insert_statement(using: str, address_count: int, numbered_by_database: bool) -> tuple[str, list[Field]]:
    """The INSERT of one outbox row with `address_count` distinct recipients, and the fields its values are for."""
    quote = connections[using].ops.quote_name
    meta, held = OutboxMessage._meta, Suppression._meta
    fields = [field for field in meta.concrete_fields if not (field.primary_key and numbered_by_database)]
    values = ["%s"] * len(fields)
    if address_count:
        values[fields.index(meta.get_field("status"))] = (
            f"CASE WHEN EXISTS (SELECT 1 FROM {quote(held.db_table)} "
            f"WHERE {quote(held.get_field('lifted_at').column)} IS NULL "
            f"AND {quote(held.get_field('address').column)} IN ({', '.join(['%s'] * address_count)})) "
            "THEN %s ELSE %s END"
        )
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(values)}) RETURNING {quote(meta.pk.column)}, {quote(meta.get_field('status').column)}"
    )
    return sql, fields


def _record_hold(message: OutboxMessage, addresses: list[str]) -> None:
    # The suppression the INSERT saw: an active one, or (lifted in the moment
    # between the two statements) the latest; the message stays held either
    # way, as it would had it been queued a moment before the lift.
    suppression = (
        Suppression.objects.filter(address__in=addresses)
        .order_by(F("lifted_at").desc(nulls_first=True), "-created_at", "-id")
        .first()
    )
    if suppression is not None:
        message.last_error = suppressed_error(suppression)
        OutboxMessage.objects.filter(pk=message.pk).update(last_error=message.last_error)


def hold_suppressed_claims(messages: Sequence[OutboxMessage]) -> list[OutboxMessage]:
    """Hold the just-claimed messages whose recipients were suppressed since enqueue; return the others.

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
