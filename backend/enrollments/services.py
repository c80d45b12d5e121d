"""Enrollment writes. The confirmation email is queued in the same transaction."""

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from backend.products.models import Product
from outbox_worker.logevents import log_event
from outbox_worker.models import OutboxMessage
from outbox_worker.services import outbox_enqueue

from .models import Enrollment, IdempotencyKey
from .tasks import notify_staff_channel

logger = logging.getLogger("backend.enrollments")

CONFIRMATION_KIND = "enrollment_confirmation"


class EnrollmentAlreadyExists(Exception):
    """This email is already enrolled in this product."""


class IdempotencyKeyReused(Exception):
    """The Idempotency-Key was already used for a request with another body."""


def format_brl(value: Decimal) -> str:
    """Return a price as Brazilians write it: R$ 1.234,56."""
    text = f"{value:,.2f}"
    return "R$ " + text.replace(",", "_").replace(".", ",").replace("_", ".")


def normalize_email(email: str) -> str:
    # Lower-cased whole: providers treat the local part case-insensitively in
    # practice, and "Ana@X.com" and "ana@x.com" must count as one enrollment.
    return email.strip().lower()


def normalize_name(name: str) -> str:
    # Every run of whitespace, line breaks included, becomes one space: a name
    # is one line of text wherever it ends up (an email body, a header, a log).
    return " ".join(name.split())


def enrollment_queue_confirmation(*, enrollment: Enrollment, dedup_key: str | None = None) -> OutboxMessage:
    """Render the confirmation email (pt-BR) and queue it; call inside a transaction."""
    context = {
        "name": enrollment.name,
        "product": enrollment.product.name,
        "price": format_brl(enrollment.product.price),
        "enrollment": enrollment,
    }
    subject = render_to_string("enrollments/emails/confirmation_subject.txt", context)
    return outbox_enqueue(
        to=[enrollment.email],
        # Template output ends with a newline; a subject is one line.
        subject=" ".join(subject.split()),
        body_text=render_to_string("enrollments/emails/confirmation.txt", context),
        body_html=render_to_string("enrollments/emails/confirmation.html", context),
        kind=CONFIRMATION_KIND,
        source=enrollment.outbox_source,
        dedup_key=dedup_key or f"{CONFIRMATION_KIND}:{enrollment.pk}",
    )


def enrollment_notify_staff(*, enrollment: Enrollment) -> None:
    """Queue the staff channel's notice of a new enrollment (call inside a transaction); nothing without a URL.

    The notice is built now, from the enrollment as it was created, so the task
    never reads the domain tables and says what happened even if the row changes.
    """
    if not settings.STAFF_WEBHOOK_URL:
        return
    product = enrollment.product
    notify_staff_channel.enqueue(
        {
            "event": "enrollment.created",
            "enrollment": {"id": enrollment.pk, "name": enrollment.name, "email": enrollment.email,
                           "created_at": enrollment.created_at.isoformat()},
            "product": {"id": product.pk, "name": product.name, "price": str(product.price)},
        }
    )  # fmt: skip


def enrollment_create(*, product: Product, name: str, email: str, phone: str = "") -> Enrollment:
    """Enroll a student, queue the confirmation email and the staff notice: all commit, or none does."""
    email = normalize_email(email)
    try:
        with transaction.atomic():
            enrollment = Enrollment.objects.create(
                product=product, name=normalize_name(name), email=email, phone=phone.strip()
            )
            message = enrollment_queue_confirmation(enrollment=enrollment)
            enrollment_notify_staff(enrollment=enrollment)
    except IntegrityError:
        if Enrollment.objects.filter(product=product, email=email).exists():
            raise EnrollmentAlreadyExists from None
        raise
    log_event(logger, logging.INFO, "enrollments.created", id=enrollment.pk, product=product.pk, message_id=message.pk)
    return enrollment


def request_fingerprint(data: object) -> str:
    """Return a hash of a parsed request body that ignores key order and spacing."""
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict
    replayed: bool


def idempotent_request(*, key: str, request_hash: str, handle: Callable[[], tuple[int, dict]]) -> StoredResponse:
    """Run `handle` at most once per `key`; later calls with the same body get its stored response.

    The key row is inserted before the work, in one transaction with it. A
    concurrent request with the same key blocks on the unique index until the
    first one commits (then replays its response) or rolls back (then does the
    work itself), so two requests with one key never create two enrollments.
    Raises IdempotencyKeyReused when the key was used with a different body.
    """
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(key=key, request_hash=request_hash)
        except IntegrityError:
            record = IdempotencyKey.objects.get(key=key)
            if record.request_hash != request_hash:
                raise IdempotencyKeyReused from None
            return StoredResponse(record.status_code, record.response_body, replayed=True)
        status_code, body = handle()
        record.status_code, record.response_body = status_code, body
        record.save(update_fields=["status_code", "response_body"])
    return StoredResponse(status_code, body, replayed=False)


def enrollment_resend_confirmation(*, enrollment: Enrollment) -> OutboxMessage:
    """Queue a fresh confirmation from the current templates; earlier ones are kept."""
    with transaction.atomic():
        return enrollment_queue_confirmation(
            enrollment=enrollment, dedup_key=f"{CONFIRMATION_KIND}:{enrollment.pk}:resend:{uuid.uuid4().hex}"
        )


@dataclass(frozen=True)
class EmailCorrected:
    previous_email: str
    message: OutboxMessage


def enrollment_correct_email_and_resend(*, enrollment_id: int, email: str) -> EmailCorrected:
    """Correct a student's address and queue a new confirmation to it, in one transaction.

    The earlier confirmations (and the provider's events about them) are kept
    as they are. `email` must already be validated (the API's rules); raises
    EnrollmentAlreadyExists when the student is already enrolled in the
    product with the corrected address.
    """
    email = normalize_email(email)
    try:
        with transaction.atomic():
            enrollment = Enrollment.objects.select_for_update().select_related("product").get(pk=enrollment_id)
            previous = enrollment.email
            enrollment.email = email
            enrollment.save(update_fields=["email"])
            message = enrollment_queue_confirmation(
                enrollment=enrollment,
                dedup_key=f"{CONFIRMATION_KIND}:{enrollment.pk}:corrected:{uuid.uuid4().hex}",
            )
    except IntegrityError:
        product_id = Enrollment.objects.values_list("product_id", flat=True).get(pk=enrollment_id)
        if Enrollment.objects.filter(product_id=product_id, email=email).exclude(pk=enrollment_id).exists():
            raise EnrollmentAlreadyExists from None
        raise
    log_event(logger, logging.INFO, "enrollments.email_corrected", id=enrollment_id, message_id=message.pk)
    return EmailCorrected(previous_email=previous, message=message)


def idempotency_key_prune(*, older_than: timedelta) -> int:
    """Delete stored Idempotency-Keys older than `older_than`; return how many.

    Clients retry within minutes; a day-old key is only taking up space. After
    pruning, the same key is simply new again.
    """
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted
