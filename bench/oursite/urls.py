from django.urls import path

from backend.urls import urlpatterns as product_urlpatterns

from .views import SyncEnrollmentView

urlpatterns = [
    *product_urlpatterns,
    path("bench/sync-enrollments/", SyncEnrollmentView.as_view(), name="bench-sync-enrollment"),
]
