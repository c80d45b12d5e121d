"""One way to log an event: a greppable line for people, typed fields for machines.

`log_event(logger, logging.INFO, "outbox.delivery", id=12, attempt=1, outcome="sent")`
writes the line `outbox.delivery id=12 attempt=1 outcome="sent"`-style text
(values that could be misread are JSON-quoted, so an SMTP reply can neither
add a field nor start a new line) and hands the same values to the handler
as `extra={"event": ..., "fields": {...}}`. A JSON formatter reads `fields`;
it never parses the text back, so nothing inside a value can forge a field.

Recipient addresses are masked (`a***@example.com`) in every string value:
logs are kept and shipped further than the admin, which shows them in full.
"""

import json
import logging
import math
import re

_ADDRESS = re.compile(r"([^\s<>\"'(),:;\[\]@]{1})[^\s<>\"'(),:;\[\]@]*@([A-Za-z0-9.\-\[\]]+)")
_PLAIN = re.compile(r"[\w.:/+\-@*]+")


def mask_addresses(text: str) -> str:
    """Return `text` with each email address reduced to its first character and domain."""
    return _ADDRESS.sub(r"\1***@\2", text)


def _clean(value: object) -> object:
    if isinstance(value, str):
        return mask_addresses(value) if "@" in value else value  # no "@", no address: skip the regex
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(item) for item in value]
    return value


def _render(value: object) -> str:
    # Most fields of the per-email events are ids, counts and durations: written
    # here as json.dumps writes them, without its encoder's cost on each.
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if kind is str and _PLAIN.fullmatch(value):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: object) -> None:
    """Log `event` with `fields`, as one line of text and as structured fields."""
    if not logger.isEnabledFor(level):
        return
    cleaned = {key: _clean(value) for key, value in fields.items()}
    text = " ".join([event, *[f"{key}={_render(value)}" for key, value in cleaned.items()]])
    logger.log(level, "%s", text, extra={"event": event, "fields": cleaned}, stacklevel=2)
