from django.conf import settings
from rest_framework.throttling import AnonRateThrottle


class EnrollmentCreateThrottle(AnonRateThrottle):
    """Anonymous enrollment POSTs per client address (ENROLLMENT_THROTTLE_RATE).

    The client is the address DRF's `get_ident` takes from X-Forwarded-For,
    NUM_PROXIES hops from the end, so every client behind Railway's proxy is
    counted on its own instead of all sharing the proxy's address.
    """

    scope = "enrollment_create"

    def get_rate(self) -> str | None:
        # Read at request time, not import time, so tests and operators can change it.
        return settings.ENROLLMENT_THROTTLE_RATE
