"""API clients get JSON for every error, including the ones Django answers itself."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import make_product

pytestmark = pytest.mark.django_db


def test_unknown_api_path_is_404_json():
    response = Client().get("/api/nada/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()


@pytest.mark.parametrize(
    ("method", "path"), [("put", "/api/products/"), ("delete", "/api/products/"), ("post", "/healthz")]
)
def test_wrong_method_is_405_json_with_allow(method, path):
    response = getattr(Client(), method)(path)

    assert response.status_code == 405
    assert "detail" in response.json()
    assert response.has_header("Allow")


def test_a_body_over_the_limit_is_413_json(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024

    response = Client().post("/api/enrollments/", data="x" * 2000, content_type="application/json")

    assert response.status_code == 413
    assert "1024" in response.json()["detail"]


def test_a_disallowed_host_is_400_json():
    response = Client().get("/api/products/", HTTP_HOST="evil.example")

    assert response.status_code == 400
    assert "detail" in response.json()


def test_unsupported_content_type_is_415_json():
    response = Client().post("/api/enrollments/", data="<x/>", content_type="text/xml")

    assert response.status_code == 415
    assert "detail" in response.json()


def test_request_id_is_honoured_or_generated():
    given = APIClient().get("/api/products/", HTTP_X_REQUEST_ID="abc-123")
    made = APIClient().get("/api/products/")
    forged = APIClient().get("/api/products/", HTTP_X_REQUEST_ID="x\ny")

    assert given["X-Request-ID"] == "abc-123"
    assert len(made["X-Request-ID"]) == 32
    assert forged["X-Request-ID"] != "x\ny"


def test_schema_and_docs_are_served():
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    docs = Client().get("/api/docs/")

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert set(paths) == {"/api/products/", "/api/enrollments/", "/api/enrollments/{id}/", "/healthz"}
    post = paths["/api/enrollments/"]["post"]
    assert {"201", "400", "409", "413", "422", "429"} <= set(post["responses"])
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
    # Swagger UI comes from our own static files, not a CDN.
    assert b"drf_spectacular_sidecar/swagger-ui-dist/" in docs.content
    assert b"cdn.jsdelivr.net" not in docs.content


def test_an_unexpected_error_is_a_json_500_without_a_traceback(monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("backend.enrollments.views.enrollment_create", broken)
    product = make_product()

    response = Client(raise_request_exception=False).post(
        "/api/enrollments/",
        {"product": product.pk, "name": "Ana", "email": "ana@example.com"},
        content_type="application/json",
    )

    assert response.status_code == 500
    assert response.json() == {"detail": "Um erro de servidor ocorreu."}
    assert b"secret internals" not in response.content
