from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OutboxWorkerConfig(AppConfig):
    name = "outbox_worker"
    label = "outbox_worker"
    verbose_name = _("Email outbox")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the receiver of anymail's `tracking` signal (provider delivery events).
        from . import tracking  # noqa: F401
