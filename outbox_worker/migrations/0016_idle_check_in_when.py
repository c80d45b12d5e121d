"""On PostgreSQL, test the idle lock in the triggers' WHEN clauses instead of inside their functions.

Same rule as 0013 (NOTIFY only while some worker is idle), evaluated where it
costs least: a row-level AFTER trigger whose WHEN is false is never queued, so
the common case (every sender busy, or no worker at all) no longer pays for
queueing an event and calling a PL/pgSQL function per enqueued row. The
functions keep only the NOTIFY. Measured side by side against 0013's trigger
(database copies, alternating processes): the enqueue cost 0.965x
(docs/benchmarks-issue8.md). The conditions are evaluated in
order, the lock last, so rows that are not due never take it; had PostgreSQL
evaluated them in another order, a shared lock on a row that is not due would
only make an idle-going worker claim once more (idle.py, step 1).
"""

from django.db import migrations

IDLE_LOCK_KEY = 7_361_000_013  # outbox_worker.idle.IDLE_LOCK_KEY; a migration must not import app code

NOTIFY = """
BEGIN
    PERFORM pg_notify('outbox_worker', '');
    RETURN NULL;
END;
"""

# 0013's functions, for going back.
NOTIFY_IF_IDLE = f"""
BEGIN
    -- Shared with every other enqueue; fails only while an idle worker holds the key exclusively.
    IF NOT pg_try_advisory_xact_lock_shared({IDLE_LOCK_KEY}) THEN
        PERFORM pg_notify('outbox_worker', '');
    END IF;
    RETURN NULL;
END;
"""

# (trigger and function, table, events, "due now" condition as 0007 and 0010 wrote it)
TRIGGERS = (
    (
        "outbox_worker_notify",
        "outbox_worker_outboxmessage",
        "INSERT OR UPDATE OF status, available_at",
        "NEW.status = 'pending' AND NEW.available_at <= clock_timestamp() + interval '5 seconds'",
    ),
    (
        "outbox_worker_task_notify",
        "outbox_worker_outboxtask",
        "INSERT OR UPDATE OF status",
        "NEW.status = 'pending' AND NEW.available_at <= statement_timestamp()",
    ),
)


def _define(schema_editor, *, idle_check_in_when: bool) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    body = NOTIFY if idle_check_in_when else NOTIFY_IF_IDLE
    for name, table, events, due in TRIGGERS:
        when = f"{due} AND NOT pg_try_advisory_xact_lock_shared({IDLE_LOCK_KEY})" if idle_check_in_when else due
        schema_editor.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $${body}$$ LANGUAGE plpgsql")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        schema_editor.execute(
            f"CREATE TRIGGER {name} AFTER {events} ON {table} FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION {name}()"
        )


def idle_check_in_when(apps, schema_editor):
    _define(schema_editor, idle_check_in_when=True)


def idle_check_in_function(apps, schema_editor):
    _define(schema_editor, idle_check_in_when=False)


class Migration(migrations.Migration):
    dependencies = [("outbox_worker", "0015_solo_interruptions")]

    operations = [migrations.RunPython(idle_check_in_when, idle_check_in_function)]
