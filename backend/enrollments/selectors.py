"""Enrollment reads."""

from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Concat

from outbox_worker.models import OutboxMessage

from .models import Enrollment
from .services import CONFIRMATION_KIND


def enrollment_list() -> QuerySet[Enrollment]:
    """Return enrollments with the outbox status, and the provider's verdict on their latest confirmation."""
    latest_confirmation = OutboxMessage.objects.filter(
        kind=CONFIRMATION_KIND,
        source=Concat(Value(f"{Enrollment._meta.label_lower}:"), Cast(OuterRef("pk"), CharField())),
    ).order_by("-created_at", "-id")
    return (
        Enrollment.objects.select_related("product")
        .annotate(
            email_status=Subquery(latest_confirmation.values("status")[:1]),
            email_sent_at=Subquery(latest_confirmation.values("sent_at")[:1]),
            email_delivery_status=Subquery(latest_confirmation.values("delivery_status")[:1]),
        )
        .order_by("-created_at", "-id")
    )
