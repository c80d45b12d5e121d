"""Log plumbing: the current request's id on every record, and a JSON formatter.

The request id lives in a context variable set by `RequestIdMiddleware`, so a
log call anywhere below a view (a service, a selector) carries it without
being handed the request.
"""

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

# key=value pairs in our own log messages ("outbox.sent id=12 attempt=1"):
# lifted into fields so a log search can filter on them.
_FIELD = re.compile(r"(?<![\w.])([a-z_]+)=([^\s,]+)")
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Give every record a `request_id` ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        fields = dict(_FIELD.findall(message)) if record.name.startswith(("outbox_worker", "backend")) else {}
        if "id" in fields and record.name.startswith("outbox_worker"):
            # In the worker's lines "id" is the outbox message; say so.
            payload["message_id"] = fields.pop("id")
        payload.update({key: value for key, value in fields.items() if key not in payload})
        # Anything passed with `extra=` is a field too.
        payload.update(
            {key: value for key, value in record.__dict__.items() if key not in _RESERVED and key not in payload}
        )
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)
