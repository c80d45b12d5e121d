from rest_framework import generics
from rest_framework.permissions import AllowAny

from .selectors import product_list_active
from .serializers import ProductOutputSerializer


class ProductListView(generics.ListAPIView):
    """Active products, public and paginated."""

    permission_classes = [AllowAny]
    serializer_class = ProductOutputSerializer

    def get_queryset(self):
        return product_list_active()
