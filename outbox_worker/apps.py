from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OutboxWorkerConfig(AppConfig):
    name = "outbox_worker"
    label = "outbox_worker"
    verbose_name = _("Email outbox")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the receiver of anymail's `tracking` signal (provider delivery
        # events). django-anymail is an optional extra: without it there are no
        # webhooks to receive, and the outbox works with any email backend.
        try:
            import anymail  # noqa: F401
        except ImportError:
            return
        from . import tracking  # noqa: F401
