from decimal import Decimal

from django.core.management.base import BaseCommand

from backend.products.models import Product

DEMO_PRODUCTS = [
    ("python-do-zero", "Python do Zero", "Lógica, sintaxe e seus primeiros programas.", Decimal("297.00")),
    ("django-profissional", "Django Profissional", "APIs, admin e deploy de aplicações Django.", Decimal("497.00")),
    ("sql-na-pratica", "SQL na Prática", "Consultas, índices e modelagem com PostgreSQL.", Decimal("197.90")),
]


class Command(BaseCommand):
    help = "Create the demo products (safe to run again: existing ones are updated, not duplicated)."

    def handle(self, *args: object, **options: object) -> None:
        for slug, name, description, price in DEMO_PRODUCTS:
            product, created = Product.objects.update_or_create(
                slug=slug, defaults={"name": name, "description": description, "price": price, "active": True}
            )
            self.stdout.write(f"{'created' if created else 'updated'} product id={product.pk} {product.slug}")
