from django.db import models


class ThrottleCounter(models.Model):
    """Requests one client made in one fixed window (see backend/throttle/services.py).

    One row per (scope, client, window): a new window is a new row, so a
    counter is never reset by anyone else's traffic, and expired rows are
    deleted in bulk by `expires_at`.
    """

    bucket = models.CharField(max_length=200, primary_key=True)
    count = models.PositiveIntegerField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "contador de requisições"
        verbose_name_plural = "contadores de requisições"

    def __str__(self) -> str:
        return f"{self.bucket}={self.count}"
