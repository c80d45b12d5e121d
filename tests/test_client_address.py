"""Where the client's address comes from, for each shape of request the app meets."""

import pytest

from backend.middleware import client_address_from

SOCKET = {"REMOTE_ADDR": "10.8.0.1"}


@pytest.mark.parametrize(
    ("source", "num_proxies", "headers", "client"),
    [
        # Railway's edge: its documented X-Real-IP wins over anything else.
        ("railway", 1, {"HTTP_X_REAL_IP": "203.0.113.7", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 10.8.0.9"}, "203.0.113.7"),
        # Railway as seen in the field: `X-Forwarded-For: <client>, <edge>`.
        ("railway", 1, {"HTTP_X_FORWARDED_FOR": "203.0.113.7, 10.8.0.9"}, "203.0.113.7"),
        # ... and a client that sent its own X-Forwarded-For first gains nothing.
        ("railway", 1, {"HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.7, 10.8.0.9"}, "203.0.113.7"),
        ("railway", 1, {"HTTP_X_REAL_IP": "2001:db8::7"}, "2001:db8::7"),
        ("railway", 1, {"HTTP_X_REAL_IP": "garbage"}, "10.8.0.1"),
        ("railway", 1, {}, "10.8.0.1"),
        # No proxy (local runs, tests): whatever the client writes is ignored.
        ("socket", 1, {"HTTP_X_REAL_IP": "6.6.6.6", "HTTP_X_FORWARDED_FOR": "6.6.6.6"}, "10.8.0.1"),
        # Other hosts: N proxies that each append what they saw.
        ("x-forwarded-for", 1, {"HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.7"}, "203.0.113.7"),
        ("x-forwarded-for", 2, {"HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.7, 10.8.0.9"}, "203.0.113.7"),
        ("x-forwarded-for", 1, {"HTTP_X_FORWARDED_FOR": "not-an-ip"}, "10.8.0.1"),
        ("x-forwarded-for", 0, {"HTTP_X_FORWARDED_FOR": "6.6.6.6"}, "10.8.0.1"),
    ],
)
def test_client_address(source, num_proxies, headers, client):
    assert client_address_from({**SOCKET, **headers}, source=source, num_proxies=num_proxies) == client


def test_two_clients_behind_the_same_edge_are_two_clients():
    first = client_address_from({"HTTP_X_FORWARDED_FOR": "203.0.113.7, 10.8.0.9"}, source="railway", num_proxies=1)
    second = client_address_from({"HTTP_X_FORWARDED_FOR": "198.51.100.2, 10.8.0.9"}, source="railway", num_proxies=1)

    assert first != second
