"""Delivery through a real SMTP server (aiosmtpd), on PostgreSQL and SQLite."""

import socket
from datetime import timedelta

import pytest
from django.core.mail.backends.smtp import EmailBackend
from django.utils import timezone

from outbox_worker.conf import outbox_settings
from outbox_worker.delivery import deliver
from outbox_worker.errors import Blame
from outbox_worker.models import AttemptOutcome, OutboxMessage, OutboxStatus
from outbox_worker.retry import RetryPolicy
from tests.factories import enqueue_messages

pytestmark = pytest.mark.django_db


def make_due(message: OutboxMessage) -> None:
    """Skip the persistent backoff: make a waiting message due now."""
    OutboxMessage.objects.filter(pk=message.pk).update(available_at=timezone.now())


def test_a_message_is_delivered_with_its_stored_message_id(make_worker, smtp_server):
    [message] = enqueue_messages(1, body_html="<p>Olá</p>", reply_to=["suporte@example.com"])

    stats = make_worker().run()

    [received] = smtp_server.handler.received
    assert received.rcpt_tos == ["aluno0@example.com"]
    assert received.message["Message-ID"] == message.message_id
    assert received.message["Subject"] == "Mensagem 0"
    assert received.message["Reply-To"] == "suporte@example.com"
    assert received.message.is_multipart()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert message.sent_at is not None
    assert (message.locked_by, message.locked_until) == ("", None)
    assert [a.outcome for a in message.delivery_attempts.all()] == [AttemptOutcome.SENT]
    assert stats["sent"] == 1


def test_a_451_after_data_sends_the_message_back_to_the_queue_after_one_try(make_worker, smtp_server):
    # Greylisting: the receiving server wants the message later. Waiting here
    # would hold up every other message behind this one.
    smtp_server.handler.replies.append("451 4.7.1 Greylisted, try later")
    [message] = enqueue_messages(1)
    before = timezone.now()

    make_worker().run()

    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    # Persisted, not slept through: due again after the quick first retry's wait (jittered down by at most
    # 20 %, counted from the failed try), well before the greylisting backoff's first step.
    [attempt] = message.delivery_attempts.all()
    wait = (message.available_at - attempt.finished_at).total_seconds()
    assert 0.8 * outbox_settings.FIRST_RETRY - 0.05 <= wait < 0.8 * outbox_settings.BACKOFF[0]
    assert message.available_at > before
    assert "451" in message.last_error
    assert [(a.try_number, a.outcome, a.smtp_code) for a in message.delivery_attempts.all()] == [
        (1, AttemptOutcome.TRANSIENT, 451)
    ]
    assert smtp_server.handler.data_commands == 1
    assert smtp_server.handler.received == []


def test_a_greylisted_message_is_delivered_later_with_the_same_message_id(make_worker, smtp_server):
    smtp_server.handler.replies.append("451 4.3.0 Mailbox busy")
    [message] = enqueue_messages(1)

    make_worker().run()
    make_due(message)
    make_worker().run()

    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert message.attempts == 2
    [received] = smtp_server.handler.received
    assert received.message["Message-ID"] == message.message_id
    assert smtp_server.handler.data_commands == 2


def test_one_greylisted_recipient_does_not_hold_up_the_next_message(make_worker, smtp_server):
    smtp_server.handler.rcpt_replies["aluno0@example.com"] = "451 4.7.1 Greylisted, try later"
    greylisted, normal = enqueue_messages(2)

    make_worker().run()

    greylisted.refresh_from_db()
    normal.refresh_from_db()
    assert (greylisted.status, normal.status) == (OutboxStatus.PENDING, OutboxStatus.SENT)
    assert greylisted.delivery_attempts.count() == 1
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [["aluno1@example.com"]]


def test_a_550_fails_the_message_after_one_try(make_worker, smtp_server):
    smtp_server.handler.replies.append("550 5.1.1 No such user here")
    [message] = enqueue_messages(1)

    make_worker().run()

    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    assert message.attempts == 1
    assert "550" in message.last_error
    assert [(a.outcome, a.smtp_code) for a in message.delivery_attempts.all()] == [(AttemptOutcome.PERMANENT, 550)]
    assert smtp_server.handler.data_commands == 1


def test_a_refused_recipient_fails_without_stalling_the_rest_of_the_batch(make_worker, smtp_server):
    smtp_server.handler.rcpt_replies["aluno0@example.com"] = "550 5.1.1 User unknown"
    bad, good = enqueue_messages(2)

    make_worker().run()

    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.status == OutboxStatus.FAILED
    assert "SMTPRecipientsRefused" in bad.last_error
    assert good.status == OutboxStatus.SENT
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [["aluno1@example.com"]]


def test_a_message_that_exhausts_its_attempts_is_failed(make_worker, smtp_server, settings):
    settings.OUTBOX_MAX_ATTEMPTS = 2
    smtp_server.handler.replies.extend(["452 4.2.2 Mailbox full"] * 2)
    [message] = enqueue_messages(1)

    make_worker().run()
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    make_due(message)
    make_worker().run()

    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    assert message.attempts == 2
    assert message.last_error.startswith("attempts exhausted (2/2)")
    assert message.delivery_attempts.count() == 2  # one try per delivery: no in-process waits


def test_a_hung_smtp_server_is_retried_later(silent_server, settings):
    from outbox_worker.worker import OutboxWorker

    settings.OUTBOX_SEND_TRIES = 1
    [message] = enqueue_messages(1)
    factory = lambda: EmailBackend(host="127.0.0.1", port=silent_server.port, timeout=0.5)  # noqa: E731

    OutboxWorker(connection_factory=factory, once=True, poll_interval=0).run()

    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    assert "timed out" in message.last_error
    assert len(silent_server.connections) == 1


def test_a_refused_connection_is_reconnected_in_process_then_retried_later(settings):
    from outbox_worker.worker import OutboxWorker

    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]
    [message] = enqueue_messages(1)
    factory = lambda: EmailBackend(host="127.0.0.1", port=closed_port, timeout=1)  # noqa: E731

    OutboxWorker(connection_factory=factory, once=True, poll_interval=0).run()

    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    assert "ConnectionRefusedError" in message.last_error  # why it waits, for the operator
    # The connection was tried (and retried) before the message was marked
    # started: it never began, so nothing is charged or recorded against it.
    assert (message.attempts, message.started_at, message.interruptions) == (0, None, 0)
    assert message.delivery_attempts.count() == 0


def test_one_connection_serves_batch_after_batch_and_is_closed_when_the_queue_is_dry(make_worker, smtp_server):
    opened, closed = [], []

    class CountingBackend(EmailBackend):
        def open(self):
            created = super().open()
            if created:
                opened.append(self)
            return created

        def close(self):
            if self.connection is not None:
                closed.append(self)
            super().close()

    enqueue_messages(6)
    make_worker(batch_size=2, connection_factory=lambda: CountingBackend(host="127.0.0.1", port=smtp_server.port)).run()

    assert len(smtp_server.handler.received) == 6  # three batches
    assert len(opened) == 1
    assert len(closed) == 1


def test_messages_not_yet_due_are_left_alone(make_worker, smtp_server):
    [later] = enqueue_messages(1, available_at=timezone.now() + timedelta(hours=1))

    stats = make_worker().run()

    later.refresh_from_db()
    assert later.status == OutboxStatus.PENDING
    assert later.attempts == 0
    assert smtp_server.handler.received == []
    assert stats["sent"] == 0


def test_a_message_whose_workers_keep_dying_mid_send_is_failed_not_retried_forever(make_worker, smtp_server):
    [message] = enqueue_messages(1)
    # Its last allowed delivery was started by a worker that never came back.
    OutboxMessage.objects.filter(pk=message.pk).update(
        status=OutboxStatus.SENDING,
        attempts=message.max_attempts,
        started_at=timezone.now(),
        locked_by="dead",
        locked_until=timezone.now() - timedelta(seconds=1),
    )

    make_worker().run()

    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    assert "interrupted" in message.last_error
    assert [a.outcome for a in message.delivery_attempts.all()] == [AttemptOutcome.ABANDONED]
    assert smtp_server.handler.received == []


def test_shutdown_mid_batch_releases_the_unstarted_rows(make_worker, smtp_server, smtp_backend_factory):
    enqueue_messages(3)
    worker = make_worker(once=False)

    def backend_that_stops_the_worker():
        backend = smtp_backend_factory()
        real_send = backend.send_messages

        def send_then_stop(messages):
            worker.shutdown()  # as a SIGTERM arriving during the first send would
            return real_send(messages)

        backend.send_messages = send_then_stop
        return backend

    worker.connection_factory = backend_that_stops_the_worker
    worker.run()

    assert len(smtp_server.handler.received) == 1
    rows = list(OutboxMessage.objects.order_by("pk").values_list("status", "attempts", "locked_by"))
    assert rows == [(OutboxStatus.SENT, 1, ""), (OutboxStatus.PENDING, 0, ""), (OutboxStatus.PENDING, 0, "")]


@pytest.mark.parametrize("finish_within,first_written_before_second_send", [(0, True), (600, False)])
def test_outcomes_wait_in_memory_at_most_finish_within_seconds(
    make_worker, smtp_server, smtp_backend_factory, settings, finish_within, first_written_before_second_send
):
    settings.OUTBOX_FINISH_WITHIN = finish_within
    first, second = enqueue_messages(2)
    seen_at_second_send = []

    def backend_that_looks_at_the_table():
        backend = smtp_backend_factory()
        real_send = backend.send_messages

        def send(messages):
            if messages[0].subject == second.subject:
                seen_at_second_send.append(OutboxMessage.objects.get(pk=first.pk).status)
            return real_send(messages)

        backend.send_messages = send
        return backend

    make_worker(connection_factory=backend_that_looks_at_the_table).run()

    expected = OutboxStatus.SENT if first_written_before_second_send else OutboxStatus.SENDING
    assert seen_at_second_send == [expected]
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {OutboxStatus.SENT}


# --- deliver(): one message, its tries, and the waits it asks for ----------------


def deliver_one(message: OutboxMessage, backend: EmailBackend, policy: RetryPolicy | None = None, **options):
    """Run deliver() with a recording `sleep`: the waits it asked for, never slept through."""
    waits: list[float] = []
    options.setdefault("should_stop", lambda: False)
    result = deliver(
        message, connection=backend, policy=policy or RetryPolicy.from_settings(), worker_id="w", sleep=waits.append,
        **options,
    )  # fmt: skip
    return result, waits


def test_a_dropped_connection_costs_one_immediate_reconnect(smtp_server):
    [message] = enqueue_messages(1)
    backend = EmailBackend(host="127.0.0.1", port=smtp_server.port, timeout=5)
    backend.open()  # kept open from an earlier batch, as the worker does
    smtp_server.handler.drops_at_mail = 1  # ... and the server has dropped it since

    result, waits = deliver_one(message, backend)
    backend.close()

    assert result.sent
    assert [(a.try_number, a.outcome) for a in result.attempts] == [
        (1, AttemptOutcome.TRANSIENT),
        (2, AttemptOutcome.SENT),
    ]
    assert "SMTPServerDisconnected" in result.attempts[0].error
    assert waits == [0]
    assert len(smtp_server.handler.received) == 1


def test_a_message_level_451_returns_after_exactly_one_try_without_waiting(smtp_server):
    smtp_server.handler.rcpt_replies["aluno0@example.com"] = "451 4.7.1 Greylisted, try later"
    [message] = enqueue_messages(1)
    backend = EmailBackend(host="127.0.0.1", port=smtp_server.port, timeout=5)

    result, waits = deliver_one(message, backend)
    backend.close()

    assert not result.sent
    assert (result.blame, result.transient, result.provider_level) == (Blame.MESSAGE, True, False)
    assert [(a.outcome, a.smtp_code) for a in result.attempts] == [(AttemptOutcome.TRANSIENT, 451)]
    assert waits == []
    assert smtp_server.handler.mail_commands == 1


def test_a_provider_refusal_is_reconnected_a_bounded_number_of_times_with_sub_second_waits(smtp_server):
    smtp_server.handler.mail_replies.extend(["553 5.7.1 sender address rejected"] * 10)
    [message] = enqueue_messages(1)
    backend = EmailBackend(host="127.0.0.1", port=smtp_server.port, timeout=5)
    policy = RetryPolicy(tries=4, first_retry=1, wait_initial=0.1, wait_max=0.5, backoff_base=30, backoff_max=3600)

    result, waits = deliver_one(message, backend, policy)
    backend.close()

    assert (result.sent, result.blame, result.verdict.smtp_code) == (False, Blame.PROVIDER, 553)
    assert [(a.try_number, a.smtp_code) for a in result.attempts] == [(1, 553), (2, 553), (3, 553), (4, 553)]
    assert smtp_server.handler.mail_commands == 4
    # Immediate reconnect, then about 0.1 s, then about 0.5 s (jittered down by at most 20 %).
    assert waits[0] == 0
    assert 0.08 <= waits[1] <= 0.1
    assert 0.4 <= waits[2] <= 0.5
    assert len(waits) == 3


def test_a_stopping_worker_does_not_reconnect(smtp_server):
    smtp_server.handler.mail_replies.extend(["553 5.7.1 sender address rejected"] * 10)
    [message] = enqueue_messages(1)
    backend = EmailBackend(host="127.0.0.1", port=smtp_server.port, timeout=5)

    result, waits = deliver_one(message, backend, should_stop=lambda: True)
    backend.close()

    assert result.provider_level
    assert len(result.attempts) == 1
    assert waits == []


def test_a_row_that_cannot_be_built_is_failed_for_good_without_a_send(smtp_server):
    [message] = enqueue_messages(1)
    message.to = ["aluno@" + "á" * 64 + ".com.br"]  # IDNA cannot encode a label this long
    backend = EmailBackend(host="127.0.0.1", port=smtp_server.port, timeout=5)

    result, _waits = deliver_one(message, backend)
    backend.close()

    assert (result.sent, result.blame, result.transient) == (False, Blame.MESSAGE, False)
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.PERMANENT]
    assert "UnicodeError" in result.error
    assert smtp_server.handler.mail_commands == 0


def test_a_message_interrupted_once_gets_its_last_attempt(make_worker, smtp_server):
    # In flight once when a worker died, with one attempt left: it is sent
    # (alone, as a suspect), not failed as if that last attempt had been the
    # interrupted one. The chaos soak failed 4 of 5,000 messages this way.
    [message] = enqueue_messages(1)
    OutboxMessage.objects.filter(pk=message.pk).update(interruptions=1, attempts=message.max_attempts - 1)

    make_worker().run()

    message.refresh_from_db()
    assert (message.status, message.attempts) == (OutboxStatus.SENT, message.max_attempts)
    assert smtp_server.handler.message_ids() == [message.message_id]


def test_a_message_whose_last_attempt_was_interrupted_is_failed_unsent(make_worker, smtp_server):
    [message] = enqueue_messages(1)
    OutboxMessage.objects.filter(pk=message.pk).update(interruptions=1, attempts=message.max_attempts)

    make_worker().run()

    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    assert message.last_error.startswith(f"attempts exhausted ({message.max_attempts}/{message.max_attempts})")
    assert smtp_server.handler.message_ids() == []
