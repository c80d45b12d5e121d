from django.shortcuts import get_object_or_404
from rest_framework import status
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .selectors import enrollment_list
from .serializers import EnrollmentInputSerializer, EnrollmentOutputSerializer
from .services import EnrollmentAlreadyExists, enrollment_create


class EnrollmentListCreateView(APIView):
    """POST: anyone may enroll. GET: staff list enrollments with their email status."""

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "POST" else [IsAdminUser()]

    def post(self, request: Request) -> Response:
        serializer = EnrollmentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            enrollment = enrollment_create(**serializer.validated_data)
        except EnrollmentAlreadyExists:
            return Response(
                {"detail": "Este email já está matriculado neste produto."}, status=status.HTTP_409_CONFLICT
            )
        enrollment = enrollment_list().get(pk=enrollment.pk)
        return Response(EnrollmentOutputSerializer(enrollment).data, status=status.HTTP_201_CREATED)

    def get(self, request: Request) -> Response:
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(enrollment_list(), request, view=self)
        return paginator.get_paginated_response(EnrollmentOutputSerializer(page, many=True).data)


class EnrollmentDetailView(APIView):
    permission_classes = [IsAdminUser]

    def get(self, request: Request, pk: int) -> Response:
        enrollment = get_object_or_404(enrollment_list(), pk=pk)
        return Response(EnrollmentOutputSerializer(enrollment).data)
