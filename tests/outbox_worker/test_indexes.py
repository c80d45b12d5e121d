"""The outbox table's indexes, listed: every enqueue writes each of them, so a new one must be a choice.

The list is the one docs/benchmarks-issue8.md justifies query by query. An index that appears here by
accident (a `unique=True` or `db_index=True` on a CharField brings a `varchar_pattern_ops` twin on
PostgreSQL) makes this test fail.
"""

import pytest
from django.db import connection

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

OUTBOX_INDEXES = {
    "outbox_worker_outboxmessage_pkey": "the primary key: finishing writes, the admin page",
    "outbox_message_id_uniq": "one Message-ID per message; the admin search by Message-ID",
    "outbox_dedup_key_uniq": "one message per business event",
    "outbox_due_idx": "the claim (partial: pending rows)",
    "outbox_status_created_idx": "the claim of expired leases; the admin filter by status; per-status counts",
    "outbox_created_idx": "the admin changelist, newest first",
    "outbox_kind_created_idx": "the admin filter by kind; the list of kinds",
    "outbox_first_recipient_idx": "the admin search by a student's address",
    "outbox_source_idx": "a source's messages (the enrollment page, the search by enrollment number)",
    "outbox_resent_from_idx": "a message's resends; prune's SET NULL (partial: resends only)",
    "outbox_provider_id_idx": "a provider's webhook event finds its message (partial: HTTP API sends only)",
}


def index_names(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table])
        return {row[0] for row in cursor.fetchall()}


def test_the_outbox_table_has_exactly_the_indexes_its_queries_use():
    assert index_names("outbox_worker_outboxmessage") == set(OUTBOX_INDEXES)


def test_only_the_due_rows_the_resends_and_the_provider_ids_have_partial_indexes():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'outbox_worker_outboxmessage'::regclass AND i.indpred IS NOT NULL"
        )
        partial = dict(cursor.fetchall())
    assert set(partial) == {"outbox_due_idx", "outbox_resent_from_idx", "outbox_provider_id_idx"}
    assert "IS NOT NULL" in partial["outbox_resent_from_idx"]
