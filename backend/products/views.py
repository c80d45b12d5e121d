from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics
from rest_framework.permissions import AllowAny

from backend import api_errors

from .selectors import product_list_active
from .serializers import ProductOutputSerializer


@extend_schema_view(
    get=extend_schema(
        operation_id="product_list",
        summary="Produtos à venda",
        responses={
            200: ProductOutputSerializer(many=True),
            404: api_errors.detail_response("Página inexistente.", "Página inválida."),
            406: api_errors.NOT_ACCEPTABLE,
        },
        auth=[],
    )
)
class ProductListView(generics.ListAPIView):
    """Active products, public and paginated."""

    authentication_classes = []
    permission_classes = [AllowAny]
    serializer_class = ProductOutputSerializer

    def get_queryset(self):
        return product_list_active()
