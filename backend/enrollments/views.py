import re

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend import api_errors

from .selectors import enrollment_list
from .serializers import EnrollmentInputSerializer, EnrollmentOutputSerializer
from .services import (
    EnrollmentAlreadyExists,
    IdempotencyKeyReused,
    enrollment_create,
    idempotent_request,
    request_fingerprint,
)
from .throttling import EnrollmentCreateThrottle

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Printable ASCII without spaces: what UUIDs and the usual client libraries send.
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")

ALREADY_ENROLLED = "Este email já está matriculado neste produto."
KEY_REUSED = "Esta Idempotency-Key já foi usada com outro corpo de requisição; gere uma nova chave."

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description=(
        "Opcional (1 a 255 caracteres ASCII visíveis, ex. um UUID). Repetir a requisição com a mesma chave e o "
        "mesmo corpo devolve a resposta original sem criar nada; com outro corpo, 422."
    ),
)


class CanViewEnrollments(BasePermission):
    """Staff who hold `enrollments.view_enrollment`: the admin's own rule for this data.

    `is_staff` alone only lets a user into the admin; what they may see there
    is decided by model permissions, and the API must not show more.
    """

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return bool(user and user.is_active and user.is_staff and user.has_perm("enrollments.view_enrollment"))


class EnrollmentListCreateView(APIView):
    """POST: anyone may enroll. GET: staff list enrollments with their email status."""

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "POST" else [CanViewEnrollments()]

    def get_throttles(self):
        return [EnrollmentCreateThrottle()] if self.request.method == "POST" else []

    @extend_schema(
        operation_id="enrollment_create",
        summary="Matricular um aluno",
        description=(
            "Cria a matrícula e enfileira o email de confirmação na mesma transação; responde sem esperar o envio. "
            "Limitado por cliente (ENROLLMENT_THROTTLE_RATE)."
        ),
        request=EnrollmentInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER, api_errors.RETRY_AFTER],
        responses={
            201: OpenApiResponse(
                EnrollmentOutputSerializer, description="Matrícula criada (ou repetida com a mesma Idempotency-Key)."
            ),
            400: api_errors.field_errors_response(
                "EnrollmentValidationError",
                ["product", "name", "email", "phone"],
                {"email": ["Insira um endereço de email válido."]},
            ),
            401: api_errors.detail_response("Token inválido (o POST não exige credenciais).", "Token inválido."),
            406: api_errors.NOT_ACCEPTABLE,
            409: api_errors.detail_response("Este email já está matriculado neste produto.", ALREADY_ENROLLED),
            413: api_errors.TOO_LARGE,
            415: api_errors.UNSUPPORTED_MEDIA,
            422: api_errors.detail_response("Idempotency-Key reutilizada com outro corpo.", KEY_REUSED),
            429: api_errors.THROTTLED,
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not _IDEMPOTENCY_KEY.match(key):
            raise ValidationError({IDEMPOTENCY_HEADER: ["Use de 1 a 255 caracteres ASCII visíveis (ex. um UUID)."]})
        serializer = EnrollmentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)

        def create() -> tuple[int, dict]:
            try:
                enrollment = enrollment_create(**serializer.validated_data)
            except EnrollmentAlreadyExists:
                return status.HTTP_409_CONFLICT, {"detail": ALREADY_ENROLLED}
            enrollment = enrollment_list().get(pk=enrollment.pk)
            return status.HTTP_201_CREATED, EnrollmentOutputSerializer(enrollment).data

        if key is None:
            status_code, body = create()
            return Response(body, status=status_code)
        try:
            stored = idempotent_request(key=key, request_hash=request_fingerprint(request.data), handle=create)
        except IdempotencyKeyReused:
            return Response({"detail": KEY_REUSED}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        headers = {"Idempotent-Replayed": "true"} if stored.replayed else {}
        return Response(stored.body, status=stored.status_code, headers=headers)

    @extend_schema(
        operation_id="enrollment_list",
        summary="Listar matrículas (staff)",
        description=(
            "Matrículas mais recentes primeiro, com a situação do email de confirmação. "
            "Só staff com a permissão enrollments.view_enrollment."
        ),
        responses={
            200: inline_serializer(
                "PaginatedEnrollmentList",
                fields={
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": EnrollmentOutputSerializer(many=True),
                },
            ),
            401: api_errors.UNAUTHENTICATED,
            403: api_errors.FORBIDDEN,
            404: api_errors.detail_response("Página inexistente.", "Página inválida."),
            406: api_errors.NOT_ACCEPTABLE,
        },
        parameters=[
            OpenApiParameter("page", OpenApiTypes.INT, OpenApiParameter.QUERY, description="Página (20 por página).")
        ],
    )
    def get(self, request: Request) -> Response:
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(enrollment_list(), request, view=self)
        return paginator.get_paginated_response(EnrollmentOutputSerializer(page, many=True).data)


class EnrollmentDetailView(APIView):
    permission_classes = [CanViewEnrollments]

    @extend_schema(
        operation_id="enrollment_retrieve",
        summary="Detalhe de uma matrícula (staff)",
        description=(
            "Uma matrícula com a situação do email de confirmação. "
            "Só staff com a permissão enrollments.view_enrollment."
        ),
        responses={
            200: EnrollmentOutputSerializer,
            401: api_errors.UNAUTHENTICATED,
            403: api_errors.FORBIDDEN,
            404: api_errors.NOT_FOUND,
            406: api_errors.NOT_ACCEPTABLE,
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        enrollment = get_object_or_404(enrollment_list(), pk=pk)
        return Response(EnrollmentOutputSerializer(enrollment).data)
