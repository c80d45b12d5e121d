"""On PostgreSQL, NOTIFY only when some worker is idle, so concurrent enqueues stop queueing behind NOTIFY.

`pg_notify` takes a database-wide lock held through the commit's WAL flush;
16 concurrent committers that all NOTIFY ran at 0.14–0.31× the commits/s of
no trigger (docs/benchmarks-issue8.md §4). An idle sender holds advisory lock
7361000013 (outbox_worker.idle.IDLE_LOCK_KEY) exclusively while it
sleeps; the trigger functions try it in shared mode and NOTIFY only when that
fails. Enqueues share the lock without contention while every sender is busy.
Why no wake-up is lost: outbox_worker/idle.py's docstring.

Only the functions change: the triggers' WHEN clauses (rows due now, 0007 and
0010) stay as they are.
"""

from django.db import migrations

IDLE_LOCK_KEY = 7_361_000_013  # outbox_worker.idle.IDLE_LOCK_KEY; a migration must not import app code

ONLY_IF_IDLE = f"""
BEGIN
    -- Shared with every other enqueue; fails only while an idle worker holds the key exclusively.
    IF NOT pg_try_advisory_xact_lock_shared({IDLE_LOCK_KEY}) THEN
        PERFORM pg_notify('outbox_worker', '');
    END IF;
    RETURN NULL;
END;
"""

ALWAYS = """
BEGIN
    PERFORM pg_notify('outbox_worker', '');
    RETURN NULL;
END;
"""

FUNCTIONS = ("outbox_worker_notify", "outbox_worker_task_notify")


def _define(schema_editor, body: str) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in FUNCTIONS:
        schema_editor.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $${body}$$ LANGUAGE plpgsql")


def notify_only_if_idle(apps, schema_editor):
    _define(schema_editor, ONLY_IF_IDLE)


def notify_always(apps, schema_editor):
    _define(schema_editor, ALWAYS)


class Migration(migrations.Migration):
    dependencies = [("outbox_worker", "0012_labels_in_english")]

    operations = [migrations.RunPython(notify_only_if_idle, notify_always)]
