from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models


class Product(models.Model):
    """A course for sale."""

    name = models.CharField("nome", max_length=200)
    slug = models.SlugField("slug", max_length=200, unique=True)
    description = models.TextField("descrição", blank=True)
    price = models.DecimalField(
        "preço (R$)", max_digits=10, decimal_places=2, validators=[MinValueValidator(Decimal("0"))]
    )
    active = models.BooleanField("ativo", default=True)
    created_at = models.DateTimeField("criado em", auto_now_add=True)

    class Meta:
        verbose_name = "produto"
        verbose_name_plural = "produtos"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name
