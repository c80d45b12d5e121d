"""One INSERT for a new outbox row, cheaper than `Model.save()`: the enqueue's hot path.

`save()` compiles the statement and prepares all 31 fields through the field
API on every call. A new message leaves most of them at their defaults (no
attempt yet, no lease, no error, no provider id), so here the statement is
built once per database, the defaults' database values are prepared once, and
only the fields a caller changed are prepared per call. Measured with
`bench/run enqueue` (docs/benchmarks-issue8.md): preparing the 31 fields cost
~68 µs of a ~2.8 ms enrollment; this way ~25 µs.
"""

import functools
from dataclasses import dataclass

from django.db import connections, router
from django.db.models import Field

from .models import OutboxMessage


@dataclass(frozen=True)
class _Statement:
    sql: str
    fields: tuple[Field, ...]
    # Per field: (the Python default, its database value) when that default is the same on every call.
    defaults: tuple[tuple[object, object] | None, ...]


def insert_message(message: OutboxMessage) -> None:
    """INSERT an unsaved message in one statement and give it its primary key, as `save()` would."""
    using = router.db_for_write(OutboxMessage)
    connection = connections[using]
    statement = _statement(using, message.pk is None)
    params = []
    for field, default in zip(statement.fields, statement.defaults, strict=True):
        if default is not None and getattr(message, field.attname) == default[0]:
            params.append(default[1])
        else:
            params.append(field.get_db_prep_save(field.pre_save(message, add=True), connection))
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        (message.pk,) = cursor.fetchone()
    message._state.adding, message._state.db = False, using


@functools.lru_cache(maxsize=8)
def _statement(using: str, numbered_by_database: bool) -> _Statement:
    connection = connections[using]
    quote = connection.ops.quote_name
    meta = OutboxMessage._meta
    fields = tuple(field for field in meta.concrete_fields if not (field.primary_key and numbered_by_database))
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {quote(meta.pk.column)}"
    )
    defaults = []
    for field in fields:
        fixed = None
        if _has_fixed_default(field):
            value = field.get_default()
            prepared = field.get_db_prep_save(value, connection)
            # Only plain values are kept: an adapter object (a JSON wrapper) would be shared between threads.
            if prepared is None or isinstance(prepared, str | int):
                fixed = (value, prepared)
        defaults.append(fixed)
    return _Statement(sql, fields, tuple(defaults))


def _has_fixed_default(field: Field) -> bool:
    """True when every new row gets the same default (not `timezone.now`, not a primary key, not `auto_now`)."""
    if field.primary_key or field.has_db_default() or getattr(field, "auto_now", False):
        return False
    if not field.has_default():
        return True  # None, or "" for a text column that is not nullable
    return not callable(field.default)
