"""Background tasks of the enrollment domain, run by the outbox worker (outbox_worker.tasks)."""

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from datetime import UTC
from email.utils import parsedate_to_datetime

from django.conf import settings
from django.utils import timezone
from django_tasks import task

from outbox_worker.tasks import PermanentTaskError, RetryTaskLater


class WebhookUnavailable(RetryTaskLater):
    """The staff webhook answered 429 or 5xx, or not at all: worth trying again later (after its Retry-After)."""


def retry_after_seconds(value: str | None) -> float:
    """Seconds a `Retry-After` header asks us to wait (delta-seconds or an HTTP date); 0 when absent or unreadable."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is read as such
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - timezone.now()).total_seconds())


def webhook_signature(*, secret: str, body: bytes) -> str:
    """Return the `X-Signature` value the receiver checks: `sha256=<hex HMAC-SHA256(secret, body)>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirected POST would be replayed as a GET (or to another host, with
    # our signature): a redirect is a misconfigured URL, reported as such.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


@task()
def notify_staff_channel(payload: dict) -> int:
    """POST `payload` as JSON to STAFF_WEBHOOK_URL, signed with STAFF_WEBHOOK_SECRET; return the HTTP status.

    429, 5xx, timeouts and refused connections raise WebhookUnavailable (the
    outbox retries with backoff, and not before the answer's Retry-After); any
    other answer outside 2xx is permanent.
    The URL and secret are read when the task runs, never stored in the row.
    """
    url = settings.STAFF_WEBHOOK_URL
    if not url.startswith(("https://", "http://")):
        raise PermanentTaskError(f"STAFF_WEBHOOK_URL must be an http(s) URL, not {url!r}")
    body = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "X-Signature": webhook_signature(secret=settings.STAFF_WEBHOOK_SECRET, body=body),
            "User-Agent": "outbox-worker-staff-webhook",
        },
    )
    try:
        with _opener.open(request, timeout=settings.STAFF_WEBHOOK_TIMEOUT) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        if exc.code == 429 or exc.code >= 500:
            after = retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
            raise WebhookUnavailable(f"staff webhook answered {exc.code} {exc.reason}", after=after) from None
        raise PermanentTaskError(f"staff webhook refused the notification: {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise WebhookUnavailable(f"staff webhook unreachable: {exc}") from exc
