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
