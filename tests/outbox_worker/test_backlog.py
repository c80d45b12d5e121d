"""The backlog: one claim per batch for the whole worker process, shared out to its sender threads."""

import threading
from collections import Counter
from functools import partial

import pytest

from outbox_worker.backlog import Backlog
from outbox_worker.claim import outbox_claim_batch
from outbox_worker.models import OutboxMessage, OutboxStatus
from outbox_worker.outcomes import OutcomeBook
from tests.factories import enqueue_messages
from tests.processes import sigterm_during_first_send, start_worker


def make_backlog(*, batch_size=40, group_size=10, senders=4, worker_id="w1"):
    book = OutcomeBook(worker_id=worker_id, finish_within=1.0)
    claim = partial(outbox_claim_batch, worker_id=worker_id, lease_seconds=60)
    return Backlog(claim=claim, batch_size=batch_size, group_size=group_size, senders=senders, book=book), book


@pytest.mark.django_db
def test_one_claim_is_shared_out_to_every_sender_in_order():
    messages = enqueue_messages(50)
    backlog, book = make_backlog(batch_size=40, group_size=10, senders=4)

    groups = [backlog.take() for _ in range(4)]

    assert [len(group) for group in groups] == [10, 10, 10, 10]
    assert [m.pk for group in groups for m in group] == [m.pk for m in messages[:40]]
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENDING).count() == 40  # one claim, not four
    assert book.in_hand() == {m.pk for m in messages[:40]}  # the keeper keeps their leases
    # The next claim finds the last 10: a part (3) for each of the four senders.
    assert [m.pk for m in backlog.take()] == [m.pk for m in messages[40:43]]


@pytest.mark.django_db
def test_a_short_batch_gives_every_sender_a_part_instead_of_whole_groups_to_the_first():
    enqueue_messages(8)
    backlog, _ = make_backlog(batch_size=40, group_size=10, senders=4)

    assert [len(backlog.take()) for _ in range(5)] == [2, 2, 2, 2, 0]


@pytest.mark.django_db
def test_a_batch_smaller_than_the_senders_still_gives_each_sender_one():
    enqueue_messages(30)
    backlog, _ = make_backlog(batch_size=10, group_size=10, senders=20)

    assert [len(backlog.take()) for _ in range(20)] == [1] * 20
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENDING).count() == 20


@pytest.mark.django_db
def test_a_suspect_is_taken_alone():
    messages = enqueue_messages(6)
    OutboxMessage.objects.filter(pk=messages[2].pk).update(interruptions=1)
    backlog, _ = make_backlog(batch_size=6, group_size=10, senders=1)

    groups = [[m.pk for m in backlog.take()] for _ in range(3)]

    assert groups == [[m.pk for m in messages[:2]], [messages[2].pk], [m.pk for m in messages[3:]]]


@pytest.mark.django_db
def test_take_all_empties_the_backlog_and_nothing_taken_was_charged():
    enqueue_messages(12)
    backlog, _ = make_backlog(batch_size=12, group_size=4, senders=1)
    backlog.take()

    rest = backlog.take_all()

    assert len(rest) == 8 and len(backlog) == 0
    assert {m.attempts for m in OutboxMessage.objects.filter(pk__in=[m.pk for m in rest])} == {0}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sigterm_hands_back_the_backlog_that_no_sender_took_uncharged(smtp_server, tmp_path):
    smtp_server.handler.gate = threading.Event()
    enqueue_messages(30)
    # One sender, groups of 5: after its first group 25 rows wait in the backlog, never started.
    worker = start_worker(
        "--batch-size", "30", "--concurrency", "1", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log",
        OUTBOX_FINISH_EVERY="5",
    )  # fmt: skip
    code = sigterm_during_first_send(smtp_server, worker, rows_held=30)

    assert code == 0
    assert len(smtp_server.handler.received) == 1
    assert Counter(OutboxMessage.objects.values_list("status", flat=True)) == {
        OutboxStatus.SENT: 1,
        OutboxStatus.PENDING: 29,
    }
    # The rest of the started group got its attempt back; the backlog never spent one.
    pending = OutboxMessage.objects.filter(status=OutboxStatus.PENDING)
    assert set(pending.values_list("attempts", "locked_by", "interruptions")) == {(0, "", 0)}
