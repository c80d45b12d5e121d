from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from outbox_worker.mime import header_text_problem


def validate_fits_in_a_subject(value: str) -> None:
    # The name goes into every confirmation's subject, where the outbox refuses
    # control characters and line separators: refuse them where the name is typed.
    if header_text_problem(" ".join(value.split())) is not None:
        raise ValidationError("Não use caracteres de controle nem separadores de linha no nome do produto.")


class Product(models.Model):
    """A course for sale."""

    name = models.CharField("nome", max_length=200, validators=[validate_fits_in_a_subject])
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
