"""Log plumbing: the current request's id on every record, and a JSON formatter.

The request id lives in a context variable set by `RequestIdMiddleware`, so a
log call anywhere below a view (a service, a selector) carries it without
being handed the request.

The JSON formatter is python-json-logger's: every field comes from the
record's attributes (`extra=`; `log_event` puts an event's values under
`fields`), never from the rendered message, so text inside a value (an SMTP
reply saying `id=999`) can neither add a field nor overwrite one.
"""

import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as LibraryJsonFormatter

from outbox_worker.logevents import mask_addresses

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

# Written last, from the record itself: no field of an event may replace them.
_CORE = ("time", "level", "logger", "message", "request_id")


class RequestIdFilter(logging.Filter):
    """Give every record a `request_id` ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class MaskAddressesFilter(logging.Filter):
    """Mask email addresses in every line, whoever logged it (`a***@example.com`).

    log_event() masks its own values; this catches the rest: an exception's
    text (SMTPRecipientsRefused names every refused student), a third-party
    logger, a line not yet converted to log_event. The admin keeps them in full.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "fields") and hasattr(record, "event") and not record.exc_info:
            return True  # a log_event() line: masked when it was made; a second pass costs every event a regex
        message = record.getMessage()
        masked = mask_addresses(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_addresses(logging.Formatter().formatException(record.exc_info))
        return True


class JsonFormatter(LibraryJsonFormatter):
    """One JSON object per line: time, level, logger, message, request_id, then the event's fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        # The library adds every non-standard record attribute (`extra=`).
        super().add_fields(log_data, record, message_dict)
        fields = log_data.pop("fields", None)
        if isinstance(fields, dict):
            fields = dict(fields)
            if record.name.startswith("outbox_worker") and "id" in fields and "message_id" not in fields:
                # In the outbox's events "id" is the outbox message; say so.
                fields["message_id"] = fields.pop("id")
            for key, value in fields.items():
                log_data.setdefault(key, value)
        log_data.update(
            {
                "time": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                "request_id": getattr(record, "request_id", request_id_var.get()),
            }
        )
        # Core first, for a reader scanning lines.
        ordered = {key: log_data.pop(key) for key in _CORE}
        ordered.update(log_data)
        log_data.clear()
        log_data.update(ordered)

    def formatException(self, ei) -> str:
        return mask_addresses(super().formatException(ei))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
