"""LOG_FORMAT=json: one JSON object per line, every field from `extra=`, none parsed from the text."""

import io
import json
import logging
import smtplib

import pytest
from rest_framework.test import APIClient

from backend.logs import JsonFormatter, MaskAddressesFilter, RequestIdFilter, request_id_var
from outbox_worker.logevents import log_event
from tests.factories import make_product


class Capture:
    """A logger whose records go through the handler settings.LOGGING builds with LOG_FORMAT=json."""

    def __init__(self, name: str) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.addFilter(RequestIdFilter())
        self.handler.setFormatter(JsonFormatter())
        self.logger = logging.getLogger(name)

    def __enter__(self) -> "Capture":
        self.logger.addHandler(self.handler)
        self.level, self.logger.level = self.logger.level, logging.INFO
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.level = self.level

    def entries(self) -> list[dict]:
        lines = self.stream.getvalue().splitlines()
        return [json.loads(line) for line in lines]


def test_an_outbox_event_carries_the_message_id_and_its_fields_typed():
    with Capture("outbox_worker.delivery") as log:
        log_event(log.logger, logging.INFO, "outbox.sent", id=42, attempt=1, try_=2, duration_ms=3.5)

    [entry] = log.entries()
    assert entry["message"] == "outbox.sent id=42 attempt=1 try_=2 duration_ms=3.5"
    assert entry["event"] == "outbox.sent"
    assert (entry["message_id"], entry["attempt"], entry["try_"], entry["duration_ms"]) == (42, 1, 2, 3.5)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "outbox_worker.delivery"
    assert entry["request_id"] == "-"


def test_an_smtp_reply_cannot_forge_or_overwrite_a_field():
    reply = "550 5.1.1 <carla@exemplo.com.br> unknown id=999 message_id=1 level=CRITICAL\nrequest_id=x"
    with Capture("outbox_worker.delivery") as log:
        log_event(log.logger, logging.WARNING, "outbox.try_failed", id=7, error=reply)

    [entry] = log.entries()
    assert entry["message_id"] == 7
    assert entry["level"] == "WARNING"
    assert entry["request_id"] == "-"
    assert "id" not in entry
    # The student's address is masked in the field and in the line.
    assert entry["error"].startswith("550 5.1.1 <c***@exemplo.com.br> unknown id=999")
    assert "carla@" not in json.dumps(entry)


def test_key_value_text_in_a_plain_message_is_not_lifted_into_fields():
    with Capture("outbox_worker.worker") as log:
        log.logger.info("outbox.sent id=%s attempt=%s", 5, 1)

    [entry] = log.entries()
    assert entry["message"] == "outbox.sent id=5 attempt=1"
    assert "message_id" not in entry and "attempt" not in entry


def test_an_event_field_named_like_a_core_key_does_not_replace_it():
    with Capture("backend.enrollments") as log:
        log_event(log.logger, logging.INFO, "x.happened", level="DEBUG", time="never", logger="fake")

    [entry] = log.entries()
    assert (entry["level"], entry["logger"]) == ("INFO", "backend.enrollments")
    assert entry["time"] != "never"


def test_a_line_logged_during_a_request_carries_its_request_id():
    token = request_id_var.set("req-7")
    try:
        with Capture("backend.enrollments") as log:
            log_event(log.logger, logging.INFO, "enrollments.created", id=5, message_id=9)
    finally:
        request_id_var.reset(token)

    [entry] = log.entries()
    assert entry["request_id"] == "req-7"
    assert (entry["id"], entry["message_id"]) == (5, 9)


def test_extra_fields_and_multiline_text_stay_on_one_line():
    with Capture("backend.health") as log:
        log.logger.info("first\nsecond", extra={"flavour": "json"})

    assert "\n" not in log.stream.getvalue().rstrip("\n")
    [entry] = log.entries()
    assert entry["message"] == "first\nsecond"
    assert entry["flavour"] == "json"


@pytest.mark.django_db
def test_the_enrollment_log_line_names_the_request_and_the_queued_message():
    product = make_product()
    with Capture("backend.enrollments") as log:
        response = APIClient().post(
            "/api/enrollments/",
            {"product": product.pk, "name": "Ana", "email": "ana@example.com"},
            format="json",
            HTTP_X_REQUEST_ID="pedido-123",
        )

    [entry] = log.entries()
    assert response.status_code == 201
    assert entry["event"] == "enrollments.created"
    assert entry["request_id"] == "pedido-123"
    assert isinstance(entry["message_id"], int)
    assert entry["id"] == response.json()["id"]


def test_addresses_are_masked_in_lines_not_written_by_log_event_and_in_tracebacks():
    for formatter in (JsonFormatter(), logging.Formatter("%(message)s")):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.addFilter(RequestIdFilter())
        handler.addFilter(MaskAddressesFilter())
        handler.setFormatter(formatter)
        logger = logging.getLogger("tests.third_party")
        logger.addHandler(handler)
        try:
            try:
                raise smtplib.SMTPRecipientsRefused({"carla.souza@exemplo.com.br": (550, b"unknown")})
            except smtplib.SMTPRecipientsRefused as exc:
                logger.error("send failed: %s to %s", exc, "bia@example.com", exc_info=True)
        finally:
            logger.removeHandler(handler)

        written = stream.getvalue()
        assert "carla.souza@" not in written and "bia@" not in written
        assert "c***@exemplo.com.br" in written and "b***@example.com" in written
