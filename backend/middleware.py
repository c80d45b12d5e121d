"""Request-level plumbing: request ids, JSON errors for API clients, body size, client address."""

import ipaddress
import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import translation
from django.utils.translation import gettext as _
from rest_framework import exceptions

from .logs import request_id_var

Handler = Callable[[HttpRequest], HttpResponse]

# A caller's id is reused only if it is short and tame: it ends up in log
# lines and a response header, so nothing that could forge either gets through.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

JSON_ERROR_PREFIXES = ("/api/", "/healthz")


class RequestIdMiddleware:
    """Tag the request (and its log lines and response) with an id.

    Honours an incoming `X-Request-ID` (set by a proxy or the client) so one
    id follows the request across services; otherwise makes one up.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        # Not reset on the way out: Django logs the response ("django.request")
        # after the middleware returns. `request_finished` clears it instead.
        request_id_var.set(request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


def _forget_request_id(**kwargs: object) -> None:
    request_id_var.set("-")


request_finished.connect(_forget_request_id, dispatch_uid="backend.middleware.forget_request_id")


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


class JsonErrorsMiddleware:
    """Turn Django's HTML error pages into JSON for API paths.

    DRF already answers its own errors in JSON; this catches what happens
    outside a DRF view: an unknown URL (404), a bad Host header or an
    unreadable body (400), a method a plain view refuses (405), a body that is
    too large (413), and any 500.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code < 400 or _is_json(response) or not request.path.startswith(JSON_ERROR_PREFIXES):
            return response
        return json_error(request, response.status_code, headers=response)


def _default_detail(request: HttpRequest, status: int) -> str:
    # DRF's own messages, so they come in the client's language like DRF's errors.
    known = {
        400: exceptions.ParseError.default_detail,
        401: exceptions.NotAuthenticated.default_detail,
        403: exceptions.PermissionDenied.default_detail,
        404: exceptions.NotFound.default_detail,
        406: exceptions.NotAcceptable.default_detail,
        413: _("Corpo da requisição grande demais."),
        415: exceptions.UnsupportedMediaType.default_detail.format(media_type=request.content_type),
        429: exceptions.Throttled.default_detail,
    }
    if status == 405:
        return exceptions.MethodNotAllowed.default_detail.format(method=request.method)
    if status in known:
        return str(known[status])
    return str(exceptions.ParseError.default_detail if status < 500 else exceptions.APIException.default_detail)


def json_error(
    request: HttpRequest, status: int, detail: str | None = None, *, headers: HttpResponse | None = None
) -> JsonResponse:
    """Return `{"detail": ...}` with `status` in the client's language, keeping Allow/Retry-After."""
    with translation.override(translation.get_language_from_request(request)):
        text = detail if detail is not None else _default_detail(request, status)
        text = str(text)
    response = JsonResponse({"detail": text}, status=status, json_dumps_params={"ensure_ascii": False})
    for name in ("Allow", "Retry-After"):
        if headers is not None and headers.has_header(name):
            response[name] = headers[name]
    return response


class RequestSizeLimitMiddleware:
    """Refuse bodies over DATA_UPLOAD_MAX_MEMORY_SIZE with 413 before reading them.

    Django enforces that limit only when `request.body`/`request.POST` is read,
    and answers 400; DRF's parsers read the stream directly and never check it.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return json_error(request, 400)
        if limit is not None and length > limit:
            with translation.override(translation.get_language_from_request(request)):
                detail = _("Corpo da requisição grande demais (máximo de %(limit)d bytes).") % {"limit": limit}
            return json_error(request, 413, detail)
        return self.get_response(request)


# --- The client's address ------------------------------------------------------
# Where a request's client address comes from (settings.CLIENT_ADDRESS_FROM):
#   "socket":  REMOTE_ADDR only. Local runs and tests: nothing in front of the app,
#              so any X-Forwarded-For/X-Real-IP header was written by the client.
#   "railway": Railway's edge proxy. Its documented X-Real-IP; without it, the
#              entry before the edge's own in `X-Forwarded-For: <client>, <edge>`.
#   "x-forwarded-for": NUM_PROXIES trusted proxies each append the address they
#              saw; the client is the entry NUM_PROXIES from the end.
# A header that is missing or does not hold an IP address falls back to the socket.
_RAILWAY_HOPS = 2


def _valid_ip(text: str) -> str | None:
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _forwarded_for(meta: dict, hops: int) -> str | None:
    entries = [part for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if hops < 1 or not entries:
        return None
    return _valid_ip(entries[-min(hops, len(entries))])


def client_address_from(meta: dict, *, source: str, num_proxies: int) -> str:
    """Return the client's address for the request whose WSGI environ is `meta`."""
    found = None
    if source == "railway":
        found = _valid_ip(meta.get("HTTP_X_REAL_IP", "")) or _forwarded_for(meta, _RAILWAY_HOPS)
    elif source == "x-forwarded-for":
        found = _forwarded_for(meta, num_proxies)
    return found or meta.get("REMOTE_ADDR", "") or "unknown"


def client_address(request: HttpRequest) -> str:
    """The client's address for `request`, as configured (CLIENT_ADDRESS_FROM, NUM_PROXIES)."""
    return client_address_from(request.META, source=settings.CLIENT_ADDRESS_FROM, num_proxies=settings.NUM_PROXIES)


class AdminInPortugueseMiddleware:
    """Speak the site's language (LANGUAGE_CODE, pt-BR) in the admin, whatever the browser asks for.

    The operators work in pt-BR; an en-US browser otherwise gets an admin
    that mixes Django's English with our Portuguese. The API keeps following
    Accept-Language (LocaleMiddleware, which must come before this one).
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(ADMIN_PREFIX):
            translation.activate(settings.LANGUAGE_CODE)
            request.LANGUAGE_CODE = translation.get_language()
        return self.get_response(request)


ADMIN_PREFIX = "/admin/"
