"""log_event: one readable line, the same values as fields, nothing forgeable."""

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbox_worker.logevents import _PLAIN, _clean, _render, log_event, mask_addresses


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


@given(
    value=st.one_of(
        st.integers(), st.floats(), st.booleans(), st.none(), st.text(), st.lists(st.integers() | st.text(), max_size=3)
    )
)
def test_a_value_is_written_as_json_writes_it_unless_it_is_plain_text(value):
    # _render writes ids, counts and durations itself instead of calling the JSON encoder for each.
    expected = value if isinstance(value, str) and _PLAIN.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    assert _render(value) == expected


def test_a_text_without_an_at_sign_is_left_as_it_is_and_one_with_it_is_masked():
    assert _clean("550 mailbox full") == "550 mailbox full"
    assert _clean(("x ana@example.com", 5)) == ["x a***@example.com", 5]
