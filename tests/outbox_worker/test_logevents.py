"""log_event: one readable line, the same values as fields, nothing forgeable."""

import logging

import pytest

from outbox_worker.logevents import log_event, mask_addresses


@pytest.fixture
def records(caplog):
    caplog.set_level(logging.INFO, logger="tests.logevents")
    return caplog


def test_an_event_is_a_greppable_line_and_the_same_values_as_fields(records):
    log_event(logging.getLogger("tests.logevents"), logging.INFO, "outbox.delivery", id=12, attempt=1, ok=True)

    [record] = records.records
    assert record.getMessage() == "outbox.delivery id=12 attempt=1 ok=true"
    assert record.event == "outbox.delivery"
    assert record.fields == {"id": 12, "attempt": 1, "ok": True}


def test_a_value_cannot_add_a_field_or_a_line(records):
    reply = "550 user unknown\nid=999 outcome=sent"
    log_event(logging.getLogger("tests.logevents"), logging.WARNING, "outbox.try_failed", id=3, error=reply)

    [record] = records.records
    assert "\n" not in record.getMessage()
    assert record.getMessage() == 'outbox.try_failed id=3 error="550 user unknown\\nid=999 outcome=sent"'
    assert record.fields["id"] == 3


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("ana@example.com", "a***@example.com"),
        (
            "{'carla.souza@exemplo.com.br': (550, b'5.1.1 <carla.souza@exemplo.com.br>: unknown')}",
            "{'c***@exemplo.com.br': (550, b'5.1.1 <c***@exemplo.com.br>: unknown')}",
        ),
        ("no address here", "no address here"),
    ],
)
def test_addresses_are_masked(text, masked):
    assert mask_addresses(text) == masked


def test_addresses_are_masked_in_the_line_and_in_the_fields(records):
    log_event(logging.getLogger("tests.logevents"), logging.INFO, "outbox.x", to=["bia@example.com"])

    [record] = records.records
    assert "bia@" not in record.getMessage()
    assert record.fields["to"] == ["b***@example.com"]
