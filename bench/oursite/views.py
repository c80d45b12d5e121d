"""The old request path, for comparison only: enroll and send the email inside the request.

Same shape as `POST /api/enrollments/`: same serializers, same enrollment row,
the same rendered pt-BR confirmation, but the email goes straight to Django's
email backend instead of the outbox.
"""

from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.enrollments.models import Enrollment
from backend.enrollments.selectors import enrollment_list
from backend.enrollments.serializers import EnrollmentInputSerializer, EnrollmentOutputSerializer
from backend.enrollments.services import format_brl, normalize_email


def render_confirmation(enrollment: Enrollment) -> tuple[str, str, str]:
    context = {
        "name": enrollment.name,
        "product": enrollment.product.name,
        "price": format_brl(enrollment.product.price),
        "enrollment": enrollment,
    }
    subject = " ".join(render_to_string("enrollments/emails/confirmation_subject.txt", context).split())
    text = render_to_string("enrollments/emails/confirmation.txt", context)
    html = render_to_string("enrollments/emails/confirmation.html", context)
    return subject, text, html


def _create_enrollment_without_email(request: Request) -> Enrollment:
    """The product's input checks and enrollment row, with no email queued."""
    serializer = EnrollmentInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    with transaction.atomic():
        enrollment = Enrollment.objects.create(
            product=data["product"],
            name=data["name"].strip(),
            email=normalize_email(data["email"]),
            phone=data.get("phone", "").strip(),
        )
    return enrollment


class SyncEnrollmentView(APIView):
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        enrollment = _create_enrollment_without_email(request)
        subject, text, html = render_confirmation(enrollment)
        email = EmailMultiAlternatives(subject=subject, body=text, to=[enrollment.email])
        email.attach_alternative(html, "text/html")
        email.send()
        return Response(EnrollmentOutputSerializer(enrollment).data, status=status.HTTP_201_CREATED)


class NoEmailEnrollmentView(APIView):
    """`POST /api/enrollments/` without any email: the baseline for the HTTP-level enqueue cost."""

    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        enrollment = _create_enrollment_without_email(request)
        enrollment = enrollment_list().get(pk=enrollment.pk)
        return Response(EnrollmentOutputSerializer(enrollment).data, status=status.HTTP_201_CREATED)
