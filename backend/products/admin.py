from django.contrib import admin

from backend.enrollments.services import format_brl

from .models import Product


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "price_brl", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}

    @admin.display(description="preço", ordering="price")
    def price_brl(self, product: Product) -> str:
        return format_brl(product.price)
