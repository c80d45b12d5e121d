from django.db import models

from backend.products.models import Product


class EnrollmentStatus(models.TextChoices):
    CONFIRMED = "confirmed", "confirmada"
    CANCELLED = "cancelled", "cancelada"


class Enrollment(models.Model):
    """A student's enrollment in a product (course)."""

    product = models.ForeignKey(Product, verbose_name="produto", on_delete=models.PROTECT, related_name="enrollments")
    name = models.CharField("nome do aluno", max_length=200)
    email = models.EmailField("email", max_length=254)
    phone = models.CharField("telefone", max_length=32, blank=True)
    status = models.CharField(
        "situação", max_length=16, choices=EnrollmentStatus.choices, default=EnrollmentStatus.CONFIRMED
    )
    created_at = models.DateTimeField("criada em", auto_now_add=True)

    class Meta:
        verbose_name = "matrícula"
        verbose_name_plural = "matrículas"
        ordering = ["-created_at", "-id"]
        constraints = [
            # The database, not a check-then-insert race, guarantees one
            # enrollment (and so one confirmation email) per student and course.
            models.UniqueConstraint(fields=["product", "email"], name="one_enrollment_per_product_email"),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}> em {self.product}"

    @property
    def outbox_source(self) -> str:
        """How outbox rows caused by this enrollment name it."""
        return f"{self._meta.label_lower}:{self.pk}"


class IdempotencyKey(models.Model):
    """A client's `Idempotency-Key` and the response its first request got.

    The row is inserted in the same transaction as the enrollment, so the key
    exists if and only if the work it names committed; a concurrent request
    with the same key waits on the unique index and then replays this row.
    """

    key = models.CharField("chave", max_length=255, unique=True)
    # sha256 of the request body as parsed, so a retry with another body is caught.
    request_hash = models.CharField("hash da requisição", max_length=64)
    # 0 only inside the transaction that is still doing the work; never seen committed.
    status_code = models.PositiveSmallIntegerField("status HTTP", default=0)
    response_body = models.JSONField("resposta", default=dict)
    created_at = models.DateTimeField("criada em", auto_now_add=True)

    class Meta:
        verbose_name = "chave de idempotência"
        verbose_name_plural = "chaves de idempotência"

    def __str__(self) -> str:
        return self.key
