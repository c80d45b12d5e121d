"""The outbox's public write API: enqueue, and the operator actions (resend, retry now, cancel, hand back)."""

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, QuerySet, When
from django.db.models.functions import Now
from django.utils import timezone

from .conf import outbox_settings
from .insert import insert_message
from .mime import (
    HeaderTextError,
    MessageCannotBeBuilt,
    check_buildable,
    check_header_name,
    check_header_text,
    check_mailbox,
    idna_domain,
)
from .models import (
    DeliveryAttempt,
    DeliveryEvent,
    OutboxMessage,
    OutboxStatus,
    WorkerHeartbeat,
    held_by_live_worker,
    with_held,
)

# Statuses a message never leaves by itself; only these may be pruned.
FINISHED_STATUSES = (OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.CANCELLED, OutboxStatus.SUPPRESSED)


class OutboxError(Exception):
    """A caller used the outbox wrongly; the message says how."""


def _message_id_domain(from_email: str) -> str:
    address = from_email.rsplit("<", 1)[-1].rstrip(">")
    # ASCII: a Message-ID is never an encoded word (the address was checked for an IDNA form).
    return idna_domain(address.rsplit("@", 1)[-1]) if "@" in address else "localhost"


def _check_header_texts(
    *, subject: str, from_email: str, addresses: dict[str, list[str]], headers: Mapping[str, str]
) -> None:
    # A control character or line separator in a header value can end the
    # header block early or start a new header once Python folds it (header
    # injection); a domain without an IDNA form fails at every send. Refuse
    # both here, where the caller can still react, instead of at send time.
    try:
        check_header_text(subject, what="subject")
        check_mailbox(from_email, what="from_email")
        for what, values in addresses.items():
            for value in values:
                check_mailbox(value, what=what)
        for name, value in headers.items():
            check_header_name(name)
            check_header_text(value, what=f"header {name}")
    except HeaderTextError as exc:
        raise OutboxError(str(exc)) from None


def outbox_enqueue(
    *,
    to: Sequence[str],
    subject: str,
    body_text: str,
    body_html: str = "",
    from_email: str | None = None,
    reply_to: Sequence[str] = (),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    kind: str = "",
    source: str = "",
    dedup_key: str | None = None,
    max_attempts: int | None = None,
    available_at: datetime | None = None,
) -> OutboxMessage:
    """Queue an email to be sent after the caller's transaction commits.

    Must run inside `transaction.atomic()`: the point of an outbox is that the
    email exists if and only if the business change that caused it does.
    `dedup_key` names the event (e.g. "enrollment-confirmation:42"); a second
    enqueue with the same key raises IntegrityError and so rolls the caller back.
    """
    if not connection.in_atomic_block:
        raise OutboxError("outbox_enqueue must be called inside transaction.atomic()")
    if not to:
        raise OutboxError("an email needs at least one recipient")
    headers = dict(headers or {})
    from_email = from_email or settings.DEFAULT_FROM_EMAIL
    to, cc, bcc, reply_to = list(to), list(cc), list(bcc), list(reply_to)
    _check_header_texts(
        subject=subject,
        from_email=from_email,
        addresses={"to": to, "cc": cc, "bcc": bcc, "reply_to": reply_to},
        headers=headers,
    )
    now = timezone.now()
    message = OutboxMessage(
        from_email=from_email,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        headers=headers,
        # Not email.utils.make_msgid: its only randomness is the `random` module,
        # whose state anyone can seed (Hypothesis does, per example), and two
        # enqueues in one 10 ms tick then collide on the unique index. A uuid4
        # comes from os.urandom; short enough that the header is never folded.
        message_id=f"<{uuid.uuid4().hex}@{_message_id_domain(from_email)}>",
        kind=kind,
        source=source,
        dedup_key=dedup_key or uuid.uuid4().hex,
        max_attempts=max_attempts or outbox_settings.MAX_ATTEMPTS,
        available_at=available_at or now,
        created_at=now,
    )
    try:
        # build_email's verdict, without building the whole email (mime.check_buildable;
        # bench/mime_cost.py): a row that could never become a well-formed email is
        # refused to its caller instead of failing at send time.
        check_buildable(message)
    except MessageCannotBeBuilt as exc:
        raise OutboxError(f"the email cannot be built: {exc}") from None
    # A suppressed recipient is not looked up here: the claim holds the message as
    # `suppressed` (suppression.hold_suppressed_claims), the one place that decides it.
    insert_message(message)
    return message


class Refusal(StrEnum):
    """Why an operator action leaves a row alone. The admin turns each code into words."""

    HELD = "held"  # a live worker is delivering it right now
    CHANGED_MEANWHILE = "changed_meanwhile"  # someone or something changed it between the read and the write
    ALREADY_QUEUED = "already_queued"  # pending: it is on its way already
    ALREADY_DUE = "already_due"  # pending and due: nothing to hurry
    NOT_WAITING = "not_waiting"  # retry-now is for pending messages waiting for their backoff
    FINISHED = "finished"  # sent, failed or cancelled: too late to cancel
    NOT_STALLED = "not_stalled"  # hand-back is only for rows a dead worker (or a run-out lease) holds
    INVALID_EMAIL = "invalid_email"  # a copy of this old row would not be a valid email today


@dataclass
class ActionReport:
    """What an operator action did to each selected message, by id."""

    changed: list[int] = field(default_factory=list)
    created: dict[int, int] = field(default_factory=dict)  # original id -> new copy id
    refused: dict[int, Refusal] = field(default_factory=dict)
    details: dict[int, str] = field(default_factory=dict)  # id -> technical detail of a refusal, if any


# --- The rules: each says whether an action may touch a message now ----------
# The confirmation pages (selectors.outbox_action_plan) and the services below
# both ask these, so the page never promises what the service then refuses.
# `held` is whether a live worker holds the row (models.held_by_live_worker).


def resend_refusal(*, message: OutboxMessage, held: bool) -> Refusal | None:
    """failed/cancelled/suppressed go back to the queue, sent gets a new copy; the rest is on its way already.

    A suppressed message goes back as it is: the claim holds it again while its
    address is still suppressed (lift the suppression first).
    """
    if message.status in (OutboxStatus.FAILED, OutboxStatus.CANCELLED, OutboxStatus.SUPPRESSED, OutboxStatus.SENT):
        return None
    return Refusal.HELD if held else Refusal.ALREADY_QUEUED


def retry_now_refusal(*, message: OutboxMessage, held: bool, now: datetime) -> Refusal | None:
    """Only a pending message waiting for its backoff can be made due now."""
    if message.status == OutboxStatus.PENDING:
        return None if message.available_at > now else Refusal.ALREADY_DUE
    return Refusal.HELD if held else Refusal.NOT_WAITING


def cancel_refusal(*, message: OutboxMessage, held: bool) -> Refusal | None:
    """A message still waiting (pending, or left behind by a dead worker) can be cancelled."""
    if held:
        return Refusal.HELD
    if message.status in (OutboxStatus.PENDING, OutboxStatus.SENDING):
        return None
    return Refusal.FINISHED


def requeue_refusal(*, message: OutboxMessage, held: bool) -> Refusal | None:
    """Only a `sending` row nobody live holds (dead holder or run-out lease) can be handed back."""
    if held:
        return Refusal.HELD
    return None if message.status == OutboxStatus.SENDING else Refusal.NOT_STALLED


def _with_held(message_ids: Iterable[int]) -> QuerySet[OutboxMessage]:
    return with_held(OutboxMessage.objects.filter(pk__in=list(message_ids))).order_by("pk")


def outbox_resend(*, message_ids: Iterable[int]) -> ActionReport:
    """Queue selected messages again; nothing is sent in the caller's request.

    failed/cancelled/suppressed → pending, due now, with a fresh attempt budget
    (a recipient still suppressed is held again at claim);
    sent → a new copy (new Message-ID) is queued and the original kept;
    pending or held by a worker → refused (it is already on its way).
    """
    report = ActionReport()
    now = timezone.now()
    for message in _with_held(message_ids).defer("body_text", "body_html"):
        refusal = resend_refusal(message=message, held=message.held)
        if refusal:
            report.refused[message.pk] = refusal
        elif message.status == OutboxStatus.SENT:
            try:
                copy = _enqueue_copy(OutboxMessage.objects.get(pk=message.pk))
            except OutboxError as exc:
                # A row sent before today's rules (e.g. the header-text rule) may
                # no longer be a valid email: refuse it with the reason, never a 500.
                report.refused[message.pk] = Refusal.INVALID_EMAIL
                report.details[message.pk] = str(exc)
                continue
            report.created[message.pk] = copy.pk
        # Guarded on the status we saw: a concurrent action wins, not both.
        elif OutboxMessage.objects.filter(pk=message.pk, status=message.status).update(
            status=OutboxStatus.PENDING,
            available_at=now,
            max_attempts=F("attempts") + outbox_settings.MAX_ATTEMPTS,
            updated_at=now,
        ):
            report.changed.append(message.pk)
        else:
            report.refused[message.pk] = Refusal.CHANGED_MEANWHILE
    return report


def _enqueue_copy(message: OutboxMessage) -> OutboxMessage:
    with transaction.atomic():
        copy = outbox_enqueue(
            to=message.to,
            cc=message.cc,
            bcc=message.bcc,
            reply_to=message.reply_to,
            subject=message.subject,
            body_text=message.body_text,
            body_html=message.body_html,
            from_email=message.from_email,
            headers=message.headers,
            kind=message.kind,
            source=message.source,
            dedup_key=f"resend:{message.pk}:{uuid.uuid4().hex}",
        )
        copy.resent_from = message
        copy.save(update_fields=["resent_from"])
    return copy


def outbox_cancel(*, message_ids: Iterable[int]) -> ActionReport:
    """Cancel selected messages that are still waiting; refuse the rest."""
    report = ActionReport()
    now = timezone.now()
    waiting = Q(status=OutboxStatus.PENDING) | (Q(status=OutboxStatus.SENDING) & ~held_by_live_worker())
    for message in _with_held(message_ids).defer("body_text", "body_html"):
        refusal = cancel_refusal(message=message, held=message.held)
        if refusal:
            report.refused[message.pk] = refusal
        # Guarded: a row a live worker claims at this very instant is not cancelled.
        elif OutboxMessage.objects.filter(waiting, pk=message.pk).update(
            status=OutboxStatus.CANCELLED, locked_by="", locked_until=None, updated_at=now
        ):
            report.changed.append(message.pk)
        else:
            report.refused[message.pk] = Refusal.CHANGED_MEANWHILE
    return report


def outbox_retry_now(*, message_ids: Iterable[int]) -> ActionReport:
    """Make pending messages that wait for their backoff due now; nothing is sent here.

    Only the next attempt time moves: the attempt budget is untouched, so a
    message that keeps failing still ends `failed` after `max_attempts`.
    """
    report = ActionReport()
    now = timezone.now()
    for message in _with_held(message_ids).defer("body_text", "body_html"):
        refusal = retry_now_refusal(message=message, held=message.held, now=now)
        if refusal:
            report.refused[message.pk] = refusal
        # Guarded: a worker may claim it (or someone cancel it) meanwhile.
        # Setting status (to the same value) fires the NOTIFY trigger, which
        # watches `UPDATE OF status`, so an idle worker sends it at once.
        elif OutboxMessage.objects.filter(pk=message.pk, status=OutboxStatus.PENDING, available_at__gt=now).update(
            status=OutboxStatus.PENDING, available_at=now, updated_at=now
        ):
            report.changed.append(message.pk)
        else:
            report.refused[message.pk] = Refusal.CHANGED_MEANWHILE
    return report


def outbox_requeue(*, message_ids: Iterable[int]) -> ActionReport:
    """Hand rows a dead worker (or a run-out lease) holds back to the queue, due now.

    The claim would take them back by itself once a live worker polls; this
    makes the row truthful (pending, cancellable) while no worker runs. The
    update is guarded by the same condition as the claim's take-back, so a row
    a live worker holds, or claims at this instant, is never touched. A row
    that was in flight counts one interruption, exactly as the claim counts it,
    so a message that kills workers is still quarantined (outcomes.quarantine).
    """
    report = ActionReport()
    stalled = Q(status=OutboxStatus.SENDING) & ~held_by_live_worker()
    for message in _with_held(message_ids).defer("body_text", "body_html"):
        refusal = requeue_refusal(message=message, held=message.held)
        if refusal:
            report.refused[message.pk] = refusal
        elif OutboxMessage.objects.filter(stalled, pk=message.pk).update(
            status=OutboxStatus.PENDING,
            locked_by="",
            locked_until=None,
            available_at=Now(),
            interruptions=F("interruptions") + Case(When(started_at__isnull=False, then=1), default=0),
            started_at=None,
            updated_at=Now(),
        ):
            report.changed.append(message.pk)
        else:
            report.refused[message.pk] = Refusal.CHANGED_MEANWHILE
    return report


def outbox_prune(*, before: datetime, statuses: Iterable[str], batch_size: int = 1000, dry_run: bool = False) -> int:
    """Delete finished messages last changed before `before`; return how many.

    Deletes in batches of short transactions so a big prune never holds long
    locks or a huge transaction; messages still waiting are never touched.
    """
    statuses = [status for status in statuses if status in FINISHED_STATUSES]
    old = OutboxMessage.objects.filter(status__in=statuses, updated_at__lt=before)
    if dry_run:
        return old.count()
    deleted = 0
    while True:
        ids = list(old.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        with transaction.atomic():
            DeliveryAttempt.objects.filter(message_id__in=ids).delete()
            # A pruned message's provider events go with it (a suppression keeps its own detail).
            DeliveryEvent.objects.filter(message_id__in=ids).delete()
            OutboxMessage.objects.filter(resent_from_id__in=ids).update(resent_from=None)
            # Attempts and resend links are cleared above, so this deletes only messages.
            count, _by_model = OutboxMessage.objects.filter(pk__in=ids, status__in=statuses).delete()
            deleted += count


def outbox_prune_heartbeats(*, before: datetime, dry_run: bool = False) -> int:
    """Delete heartbeats of stopped and dead workers last seen before `before`; return how many.

    Neither a killed worker nor a stopped one removes its heartbeat; the
    admin shows them (with when they were last seen) until they are pruned.
    Live workers are never touched, whatever `before` says.
    """
    alive = WorkerHeartbeat.objects.alive().values("pk")
    dead = WorkerHeartbeat.objects.filter(last_seen_at__lt=before).exclude(pk__in=alive)
    if dry_run:
        return dead.count()
    count, _by_model = dead.delete()
    return count
