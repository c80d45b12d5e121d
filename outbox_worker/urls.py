"""The provider webhooks that report delivery events (mount under any prefix, e.g. `path("webhooks/", include(...))`).

anymail's views, one per provider: `<prefix>anymail/postmark/tracking/`,
`<prefix>anymail/resend/tracking/`, … Each authenticates the call (the
ANYMAIL WEBHOOK_SECRET basic auth, and the provider's signature where it has
one) and sends anymail's `tracking` signal, which outbox_worker.tracking records.
"""

from django.urls import include, path

urlpatterns = [path("anymail/", include("anymail.urls"))]
