"""The two answers at the site's root: a JSON index of the API, and a favicon.

Without them `/` was a 404 (Django's debug page under scripts/run) and every
browser tab asked for /favicon.ico in vain.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

# A mortarboard on the admin's blue: small enough to live here as text.
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
    '<rect width="64" height="64" rx="12" fill="#417690"/>'
    '<path d="M32 14 4 27l28 13 22-10v14h4V27z" fill="#fff"/>'
    '<path d="M16 35v9c0 4 7 8 16 8s16-4 16-8v-9l-16 7z" fill="#f5dd5d"/>'
    "</svg>"
)


@require_safe
def index(request: HttpRequest) -> JsonResponse:
    """Say what this server is and where its API, docs and admin are."""
    return JsonResponse(
        {
            "name": "Cursos API",
            "docs": reverse("api-docs"),
            "schema": reverse("schema"),
            "endpoints": {
                "products": reverse("product-list"),
                "enrollments": reverse("enrollment-list"),
                "health": reverse("healthz"),
            },
            "admin": reverse("admin:index"),
        },
        json_dumps_params={"ensure_ascii": False},
    )


@require_safe
@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponse:
    return HttpResponse(FAVICON_SVG, content_type="image/svg+xml")
