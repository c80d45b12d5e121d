"""On PostgreSQL, NOTIFY workers whenever a message becomes pending.

A trigger rather than a NOTIFY statement in Python: it costs the enqueueing
transaction no extra round trip, and it also covers rows made pending by an
operator's resend or a worker's release. NOTIFY is delivered only at commit
(a listener can never hear of a row it cannot yet see), and identical
notifications in one transaction are folded into one.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION outbox_worker_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('outbox_worker', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER outbox_worker_notify
AFTER INSERT OR UPDATE OF status ON outbox_worker_outboxmessage
FOR EACH ROW WHEN (NEW.status = 'pending')
EXECUTE FUNCTION outbox_worker_notify();
"""

DROP = """
DROP TRIGGER IF EXISTS outbox_worker_notify ON outbox_worker_outboxmessage;
DROP FUNCTION IF EXISTS outbox_worker_notify();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("outbox_worker", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
