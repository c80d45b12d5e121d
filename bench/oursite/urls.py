from django.urls import path

from backend.urls import urlpatterns as product_urlpatterns

from .views import NoEmailEnrollmentView, SyncEnrollmentView

urlpatterns = [
    *product_urlpatterns,
    path("bench/sync-enrollments/", SyncEnrollmentView.as_view(), name="bench-sync-enrollment"),
    path("bench/noemail-enrollments/", NoEmailEnrollmentView.as_view(), name="bench-noemail-enrollment"),
]
