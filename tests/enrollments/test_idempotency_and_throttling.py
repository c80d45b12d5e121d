import pytest
from rest_framework.test import APIClient

from backend.enrollments.models import Enrollment
from outbox_worker.models import OutboxMessage
from tests.factories import make_product

pytestmark = pytest.mark.django_db

URL = "/api/enrollments/"


def post(body, *, key=None, client=None, **headers):
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return (client or APIClient()).post(URL, body, format="json", **headers)


def test_same_key_and_body_replays_the_original_response_and_creates_nothing():
    product = make_product()
    body = {"product": product.pk, "name": "Ana", "email": "ana@example.com"}

    first = post(body, key="3f2c9a1e-0b7d-4c55-9d3e-4a1f6c2b8e10")
    # Same content, other key order: still the same request.
    again = post(dict(reversed(body.items())), key="3f2c9a1e-0b7d-4c55-9d3e-4a1f6c2b8e10")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Enrollment.objects.count() == 1
    assert OutboxMessage.objects.count() == 1


def test_same_key_with_another_body_is_422_and_creates_nothing():
    product = make_product()
    post({"product": product.pk, "name": "Ana", "email": "ana@example.com"}, key="chave-1")

    response = post({"product": product.pk, "name": "Bia", "email": "bia@example.com"}, key="chave-1")

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert Enrollment.objects.count() == 1


def test_without_a_key_the_product_and_email_rule_still_stops_a_repeat():
    product = make_product()
    body = {"product": product.pk, "name": "Ana", "email": "ana@example.com"}

    assert post(body).status_code == 201
    assert post(body).status_code == 409
    assert OutboxMessage.objects.count() == 1


def test_a_new_key_for_an_already_enrolled_email_is_409():
    product = make_product()
    body = {"product": product.pk, "name": "Ana", "email": "ana@example.com"}
    post(body, key="a")

    assert post(body, key="b").status_code == 409
    assert OutboxMessage.objects.count() == 1


@pytest.mark.parametrize("key", ["", "tem espaço", "ç", "x" * 256])
def test_a_malformed_key_is_400(key):
    product = make_product()

    response = post({"product": product.pk, "name": "Ana", "email": "ana@example.com"}, key=key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert not Enrollment.objects.exists()


def test_invalid_input_with_a_key_stores_nothing_so_a_corrected_retry_works():
    product = make_product()

    assert post({"product": product.pk, "name": "Ana", "email": "x"}, key="k").status_code == 400
    response = post({"product": product.pk, "name": "Ana", "email": "ana@example.com"}, key="k")

    assert response.status_code == 201


# --- throttling (the store itself: tests/throttle/test_store.py) ------------------


@pytest.fixture
def throttle(settings, monkeypatch):
    settings.ENROLLMENT_THROTTLE_RATE = "3/min"
    # One fixed instant: a minute boundary never falls between a test's requests.
    monkeypatch.setattr("backend.throttle.services._now", lambda: 1_800_000_010.0)


def _attempts(n, **headers):
    product = make_product()
    return [
        post({"product": product.pk, "name": "Ana", "email": f"a{i}@example.com"}, **headers).status_code
        for i in range(n)
    ]


def test_anonymous_posts_over_the_rate_get_429_with_retry_after(throttle):
    assert _attempts(3) == [201, 201, 201]

    response = post({"product": 1, "name": "Ana", "email": "z@example.com"})

    assert response.status_code == 429
    assert response["Retry-After"] == "50"  # the rest of the minute
    assert "detail" in response.json()


def test_without_a_proxy_a_forged_header_never_picks_the_bucket(throttle):
    # CLIENT_ADDRESS_FROM=socket (the default off Railway): headers are the client's own words.
    statuses = [
        post(
            {"product": 1, "name": "Ana", "email": f"a{i}@example.com"},
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
            HTTP_X_REAL_IP=f"10.0.1.{i}",
        ).status_code
        for i in range(4)
    ]
    assert statuses[-1] == 429


def test_behind_railway_each_client_has_its_own_budget(throttle, settings):
    settings.CLIENT_ADDRESS_FROM = "railway"
    assert _attempts(3, HTTP_X_REAL_IP="203.0.113.7") == [201, 201, 201]
    assert _attempts(1, HTTP_X_REAL_IP="203.0.113.7") == [429]
    assert _attempts(1, HTTP_X_REAL_IP="198.51.100.9") == [201]


def test_two_clients_behind_the_same_railway_edge_get_separate_budgets(throttle, settings):
    settings.CLIENT_ADDRESS_FROM = "railway"
    assert _attempts(3, HTTP_X_FORWARDED_FOR="203.0.113.7, 10.8.0.1") == [201, 201, 201]
    assert _attempts(1, HTTP_X_FORWARDED_FOR="198.51.100.9, 10.8.0.1") == [201]
    assert _attempts(1, HTTP_X_FORWARDED_FOR="203.0.113.7, 10.8.0.1") == [429]


def test_an_ipv6_client_cannot_escape_by_rotating_through_its_64(throttle, settings):
    settings.CLIENT_ADDRESS_FROM = "railway"
    statuses = [_attempts(1, HTTP_X_REAL_IP=f"2001:db8:0:7::{i:x}")[0] for i in range(1, 5)]

    assert statuses == [201, 201, 201, 429]
    assert _attempts(1, HTTP_X_REAL_IP="2001:db8:0:8::1") == [201]


def test_an_unavailable_store_lets_the_enrollment_through_and_warns(throttle, caplog):
    from django.db import connection

    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("ALTER TABLE throttle_throttlecounter RENAME TO throttle_gone")

    with caplog.at_level("WARNING", logger="backend.throttle"):
        statuses = _attempts(4)

    assert statuses == [201, 201, 201, 201]
    assert Enrollment.objects.count() == 4
    assert any(getattr(r, "event", None) == "throttle.store_unavailable" for r in caplog.records), caplog.text


@pytest.mark.parametrize(("language", "words"), [("pt-BR", "segundos"), ("en", "throttled")])
def test_throttle_message_follows_accept_language(throttle, language, words):
    _attempts(3)

    response = post({"product": 1, "name": "Ana", "email": "z@example.com"}, HTTP_ACCEPT_LANGUAGE=language)

    assert response.status_code == 429
    assert words in response.json()["detail"]


def test_staff_endpoints_are_not_throttled_by_the_enrollment_rate(throttle):
    client = APIClient()
    assert {client.get(URL).status_code for _ in range(5)} == {401}
