"""On PostgreSQL, NOTIFY workers only when a row becomes pending *and due*.

A row rescheduled into the future (a transient failure's backoff, an email
scheduled for later) wakes nobody: no worker could claim it yet, and every
NOTIFY costs its transaction a database-wide lock held through commit.

"Due" is read against `clock_timestamp()`, not `now()`: `now()` is the start
of the transaction, and `outbox_enqueue` stamps `available_at` in Python after
the caller's transaction has begun (the enrollment INSERT comes first), so a
row due at once would look due "in the future" by a few milliseconds. The
5-second margin absorbs clock skew between the app server and the database;
backoffs start at 30 s, far beyond it. A missed notification only costs
latency: polling always finds the row.
"""

from django.db import migrations

DUE_ONLY = """
CREATE OR REPLACE FUNCTION outbox_worker_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('outbox_worker', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS outbox_worker_notify ON outbox_worker_outboxmessage;
CREATE TRIGGER outbox_worker_notify
AFTER INSERT OR UPDATE OF status, available_at ON outbox_worker_outboxmessage
FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.available_at <= clock_timestamp() + interval '5 seconds')
EXECUTE FUNCTION outbox_worker_notify();
"""

# 0002's trigger, for going back.
ANY_PENDING = """
DROP TRIGGER IF EXISTS outbox_worker_notify ON outbox_worker_outboxmessage;
CREATE TRIGGER outbox_worker_notify
AFTER INSERT OR UPDATE OF status ON outbox_worker_outboxmessage
FOR EACH ROW WHEN (NEW.status = 'pending')
EXECUTE FUNCTION outbox_worker_notify();
"""


def due_only(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DUE_ONLY)


def any_pending(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ANY_PENDING)


class Migration(migrations.Migration):
    dependencies = [("outbox_worker", "0006_started_marker")]

    operations = [migrations.RunPython(due_only, any_pending)]
