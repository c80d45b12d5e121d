"""LOG_FORMAT=json: one JSON object per line, with the request id and the outbox message id."""

import io
import json
import logging

import pytest
from rest_framework.test import APIClient

from backend.logs import JsonFormatter, RequestIdFilter, request_id_var
from tests.factories import make_product


def render(logger_name: str, message: str, *args: object, **extra: object) -> dict:
    record = logging.LogRecord(logger_name, logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    RequestIdFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_a_worker_line_carries_the_outbox_message_id_as_a_field():
    entry = render("outbox_worker.delivery", "outbox.sent id=%s attempt=%s try=%s", 42, 1, 2)

    assert entry["message"] == "outbox.sent id=42 attempt=1 try=2"
    assert entry["message_id"] == "42"
    assert entry["attempt"] == "1"
    assert entry["level"] == "INFO"
    assert entry["request_id"] == "-"


def test_a_line_logged_during_a_request_carries_its_request_id():
    token = request_id_var.set("req-7")
    try:
        entry = render("backend.enrollments", "enrollments.created id=%s message_id=%s", 5, 9)
    finally:
        request_id_var.reset(token)

    assert entry["request_id"] == "req-7"
    assert entry["message_id"] == "9"


def test_extra_fields_and_multiline_text_stay_on_one_line():
    entry = render("backend.health", "first\nsecond", flavour="json")

    assert entry["message"] == "first\nsecond"
    assert entry["flavour"] == "json"


@pytest.mark.django_db
def test_the_enrollment_log_line_names_the_request_and_the_queued_message():
    # The handler as settings.LOGGING builds it with LOG_FORMAT=json.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("backend.enrollments")
    logger.addHandler(handler)
    product = make_product()
    try:
        response = APIClient().post(
            "/api/enrollments/",
            {"product": product.pk, "name": "Ana", "email": "ana@example.com"},
            format="json",
            HTTP_X_REQUEST_ID="pedido-123",
        )
    finally:
        logger.removeHandler(handler)

    [entry] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert response.status_code == 201
    assert entry["request_id"] == "pedido-123"
    assert entry["message_id"].isdigit()
    assert entry["id"] == str(response.json()["id"])
