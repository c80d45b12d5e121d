from django.apps import AppConfig


class EnrollmentsConfig(AppConfig):
    name = "backend.enrollments"
    label = "enrollments"
    verbose_name = "Matrículas"
