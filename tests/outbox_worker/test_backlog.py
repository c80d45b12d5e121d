"""The backlog: one claim per batch for the whole worker process, shared out to its sender threads."""

import re
import threading
import time
from collections import Counter
from functools import partial

import pytest

from outbox_worker.backlog import Backlog
from outbox_worker.claim import outbox_claim_batch
from outbox_worker.models import OutboxMessage, OutboxStatus
from outbox_worker.outcomes import OutcomeBook
from tests.factories import enqueue_messages
from tests.notifications import idle_lock_holders
from tests.processes import sigterm_during_first_send, start_worker, stop_worker, wait_until


def make_backlog(*, batch_size=40, group_size=10, senders=4, worker_id="w1", hold_off=0.0):
    book = OutcomeBook(worker_id=worker_id, finish_within=1.0)
    claim = partial(outbox_claim_batch, worker_id=worker_id, lease_seconds=60)
    backlog = Backlog(
        claim=claim, batch_size=batch_size, group_size=group_size, senders=senders, book=book, hold_off=hold_off
    )
    return backlog, book


def pending_count() -> int:
    return OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count()


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


@pytest.mark.django_db
def test_a_sender_skips_the_claim_when_a_sibling_began_one_after_its_ticket_and_found_nothing():
    backlog, _ = make_backlog(senders=8)
    ticket = backlog.claims.ticket()  # woken by a NOTIFY, about to claim
    assert backlog.take() == []  # a sibling's claim, begun after: nothing due
    enqueue_messages(1)  # committed since: the idle lock's must-claim covers it (idle.py)

    assert backlog.take(ticket=ticket) == []
    assert pending_count() == 1  # not claimed: the sibling's answer stood for this sender too

    assert len(backlog.take(ticket=backlog.claims.ticket())) == 1  # a ticket after that claim: claims
    assert backlog.claims.begun == 2


@pytest.mark.django_db
def test_a_claim_that_found_rows_answers_for_nobody_else():
    enqueue_messages(1)
    backlog, _ = make_backlog(senders=2)
    ticket = backlog.claims.ticket()
    assert len(backlog.take()) == 1
    enqueue_messages(1)

    assert len(backlog.take(ticket=ticket)) == 1


@pytest.mark.django_db
def test_without_a_ticket_the_backlog_always_claims():
    backlog, _ = make_backlog(senders=8, hold_off=3600)
    ticket = backlog.claims.ticket()
    assert backlog.take() == []
    enqueue_messages(1)

    # The claim made under the idle lock: neither a sibling's answer nor the pacing may skip it.
    assert len(backlog.take(ticket=None)) == 1
    assert backlog.take(ticket=ticket) == []


@pytest.mark.django_db
def test_after_a_short_claim_the_next_waits_the_hold_off_and_takes_the_trickle_together():
    enqueue_messages(2)
    backlog, _ = make_backlog(batch_size=40, senders=1, hold_off=3600)
    assert len(backlog.take(ticket=backlog.claims.ticket())) == 2  # 2 of 40: the queue is drained
    assert backlog.paced_until() > time.monotonic()
    enqueue_messages(3)

    assert backlog.take(ticket=backlog.claims.ticket()) == []  # paced: no claim
    assert pending_count() == 3

    backlog._trickle_at -= 3600  # the hold-off has passed
    assert len(backlog.take(ticket=backlog.claims.ticket())) == 3  # the trickle, in one claim
    assert backlog.claims.begun == 2


@pytest.mark.django_db
@pytest.mark.parametrize(("queued", "why"), [(0, "an empty claim: the senders go idle"), (40, "a full claim")])
def test_no_pacing_after_an_empty_or_a_full_claim(queued, why):
    enqueue_messages(queued)
    backlog, _ = make_backlog(batch_size=40, senders=1, hold_off=3600)
    backlog.take(ticket=backlog.claims.ticket())

    assert backlog.paced_until() == 0, why


@pytest.mark.django_db
def test_no_pacing_without_a_hold_off():
    enqueue_messages(2)
    backlog, _ = make_backlog(batch_size=40, senders=1, hold_off=0)
    backlog.take(ticket=backlog.claims.ticket())

    assert backlog.paced_until() == 0


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


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_trickle_of_enqueues_is_claimed_in_a_few_batches_and_every_email_arrives(smtp_server, tmp_path):
    log_path = tmp_path / "worker.log"
    worker = start_worker(
        "--concurrency", "1", "--poll-interval", "3600", "--queues", "", smtp_port=smtp_server.port,
        log_path=log_path, OUTBOX_CLAIM_HOLD_OFF="2",
    )  # fmt: skip
    try:
        wait_until(idle_lock_holders, what="the idle worker to hold the idle lock")
        for _ in range(20):
            enqueue_messages(1)  # twenty enrollments, each its own transaction
            # The trickle's rhythm (not a wait for anything): slower than one send, so that without the
            # hold-off the worker would go idle and be woken for each one.
            time.sleep(0.02)
        smtp_server.handler.wait_for(20)
    finally:
        assert stop_worker(worker) == 0

    assert len(smtp_server.handler.received) == 20
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 20
    [claims] = re.findall(r"outbox\.worker_stopped .*?email_claims=(\d+)", log_path.read_text())
    # Woken by the first enqueue it claims one; the rest wait out the hold-off and come in one or two
    # claims; then the empty claims of going idle. One claim per email would be 20 or more.
    assert int(claims) <= 8, log_path.read_text()
