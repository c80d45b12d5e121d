"""Liveness for Railway's healthcheck: 200 when the database answers."""

import logging

from django.db import DatabaseError, connection
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from outbox_worker.logevents import log_event

logger = logging.getLogger("backend.health")


@method_decorator(never_cache, name="dispatch")
class HealthView(APIView):
    """No authentication, no throttling: Railway calls it on every deploy."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(
        operation_id="healthz",
        summary="Saúde do serviço",
        responses={
            200: inline_serializer("Healthy", fields={"status": serializers.CharField()}),
            503: OpenApiResponse(
                inline_serializer(
                    "Unhealthy", fields={"status": serializers.CharField(), "database": serializers.CharField()}
                ),
                description="O banco de dados não respondeu.",
            ),
        },
        auth=[],
    )
    def get(self, request: Request) -> Response:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as exc:
            # The exception text names host and database, never the password.
            log_event(logger, logging.ERROR, "healthz.database_error", error=exc.__class__.__name__)
            return Response({"status": "unavailable", "database": "unreachable"}, status=503)
        return Response({"status": "ok"})


healthz = HealthView.as_view()
