"""Enrollment writes. The confirmation email is queued in the same transaction."""

import uuid
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.template.loader import render_to_string

from backend.products.models import Product
from outbox_worker.models import OutboxMessage
from outbox_worker.services import outbox_enqueue

from .models import Enrollment

CONFIRMATION_KIND = "enrollment_confirmation"


class EnrollmentAlreadyExists(Exception):
    """This email is already enrolled in this product."""


def format_brl(value: Decimal) -> str:
    """Return a price as Brazilians write it: R$ 1.234,56."""
    text = f"{value:,.2f}"
    return "R$ " + text.replace(",", "_").replace(".", ",").replace("_", ".")


def normalize_email(email: str) -> str:
    # Lower-cased whole: providers treat the local part case-insensitively in
    # practice, and "Ana@X.com" and "ana@x.com" must count as one enrollment.
    return email.strip().lower()


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


def enrollment_create(*, product: Product, name: str, email: str, phone: str = "") -> Enrollment:
    """Enroll a student and queue the confirmation email: both commit, or neither does."""
    email = normalize_email(email)
    try:
        with transaction.atomic():
            enrollment = Enrollment.objects.create(product=product, name=name.strip(), email=email, phone=phone.strip())
            enrollment_queue_confirmation(enrollment=enrollment)
    except IntegrityError:
        if Enrollment.objects.filter(product=product, email=email).exists():
            raise EnrollmentAlreadyExists from None
        raise
    return enrollment


def enrollment_resend_confirmation(*, enrollment: Enrollment) -> OutboxMessage:
    """Queue a fresh confirmation from the current templates; earlier ones are kept."""
    with transaction.atomic():
        return enrollment_queue_confirmation(
            enrollment=enrollment, dedup_key=f"{CONFIRMATION_KIND}:{enrollment.pk}:resend:{uuid.uuid4().hex}"
        )
