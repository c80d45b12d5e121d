from django.db.models import QuerySet

from .models import Product


def product_list_active() -> QuerySet[Product]:
    return Product.objects.filter(active=True).order_by("name", "id")
