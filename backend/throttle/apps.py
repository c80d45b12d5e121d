from django.apps import AppConfig


class ThrottleConfig(AppConfig):
    name = "backend.throttle"
    label = "throttle"
    verbose_name = "Limites de requisições"
