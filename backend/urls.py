from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from backend.enrollments.views import EnrollmentDetailView, EnrollmentListCreateView
from backend.health import healthz
from backend.products.views import ProductListView
from backend.site import favicon, index

# Operators should see whose admin this is, not "Django administration".
admin.site.site_header = "Cursos · administração"
admin.site.site_title = "Cursos"
admin.site.index_title = "Operação"

urlpatterns = [
    path("", index, name="index"),
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file, not inline: it runs under script-src 'self'.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/products/", ProductListView.as_view(), name="product-list"),
    path("api/enrollments/", EnrollmentListCreateView.as_view(), name="enrollment-list"),
    path("api/enrollments/<int:pk>/", EnrollmentDetailView.as_view(), name="enrollment-detail"),
    path("webhooks/", include("outbox_worker.urls")),
]
