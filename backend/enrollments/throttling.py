from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from backend.middleware import client_address
from backend.throttle.services import Rate, throttle_hit


class EnrollmentCreateThrottle(BaseThrottle):
    """Anonymous enrollment POSTs per client (ENROLLMENT_THROTTLE_RATE).

    The client is `backend.middleware.client_address` (Railway's X-Real-IP,
    the socket, or X-Forwarded-For behind NUM_PROXIES proxies; IPv6 by /64);
    the count lives in the database (backend/throttle/services.py), shared by
    every gunicorn worker and replica.
    """

    scope = "enrollment_create"

    def __init__(self) -> None:
        self._retry_after = 0

    def allow_request(self, request: Request, view: APIView) -> bool:
        # Read at request time, not import time, so tests and operators can change it.
        rate = settings.ENROLLMENT_THROTTLE_RATE
        if not rate or request.user.is_authenticated:
            return True
        decision = throttle_hit(scope=self.scope, client=client_address(request), rate=Rate.parse(rate))
        self._retry_after = decision.retry_after_seconds
        return decision.allowed

    def wait(self) -> float | None:
        return self._retry_after or None
