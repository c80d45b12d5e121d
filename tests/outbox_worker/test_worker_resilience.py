"""Worker processes under stress: many at once, kill -9, slow sends, a lost database, NOTIFY."""

import io
import json
import signal
import socket
import threading
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from outbox_worker.conf import outbox_settings
from outbox_worker.models import AttemptOutcome, DeliveryAttempt, OutboxMessage, OutboxStatus, WorkerHeartbeat
from tests.factories import enqueue_messages
from tests.processes import listener_pids, start_worker, stop_worker, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_four_workers_deliver_2000_messages_exactly_once(smtp_server, tmp_path):
    messages = enqueue_messages(2000)
    smtp_server.handler.gate = threading.Event()
    workers = [
        start_worker("--batch-size", "25", smtp_port=smtp_server.port, log_path=tmp_path / f"w{i}.log")
        for i in range(4)
    ]
    try:
        smtp_server.handler.wait_at_gate(4)  # all four hold a batch at the same time
        smtp_server.handler.gate.set()
        smtp_server.handler.wait_for(2000, timeout=240)
    finally:
        smtp_server.handler.gate.set()
        codes = [stop_worker(w) for w in workers]

    assert codes == [0, 0, 0, 0]
    ids = Counter(smtp_server.handler.message_ids())
    assert set(ids) == {m.message_id for m in messages}
    assert max(ids.values()) == 1
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 2000


# A killed worker counts as dead this soon; its heartbeat beats faster than that.
FAST_STALENESS = {"OUTBOX_WORKER_STALE_AFTER": "2", "OUTBOX_HEARTBEAT_SECONDS": "0.3"}


def test_default_staleness_brings_a_killed_workers_rows_back_within_30_seconds():
    # One staleness window plus one heartbeat: the longest a dead worker can look alive.
    assert outbox_settings.WORKER_STALE_AFTER + outbox_settings.HEARTBEAT_SECONDS <= 30


def test_kill_9_mid_batch_charges_only_the_started_group_and_once_takes_the_rows_back_by_heartbeat(
    smtp_server, tmp_path, settings
):
    settings.OUTBOX_WORKER_STALE_AFTER = 2  # this process judges liveness as the workers do
    messages = enqueue_messages(30)
    # The first email is accepted; the worker dies during the second, before it
    # has written the first one's outcome.
    smtp_server.handler.gate = threading.Event()
    smtp_server.handler.gate_skip = 1
    # One sender thread (the default is 8 on PostgreSQL), so "the first" and "the second" are in order.
    doomed = start_worker(
        "--batch-size", "30", "--concurrency", "1", smtp_port=smtp_server.port, log_path=tmp_path / "doomed.log",
        OUTBOX_FINISH_EVERY="5", OUTBOX_FINISH_WITHIN="600", **FAST_STALENESS,
    )  # fmt: skip
    try:
        smtp_server.handler.wait_at_gate(1)
        assert smtp_server.handler.message_ids() == [messages[0].message_id]
        doomed.kill()
        assert doomed.wait(timeout=30) == -signal.SIGKILL
    finally:
        smtp_server.handler.gate.set()

    rows = {m.pk: m for m in OutboxMessage.objects.all()}
    started = [rows[m.pk] for m in messages[:5]]
    never_started = [rows[m.pk] for m in messages[5:]]
    # Only the group marked started before the first send spent an attempt.
    assert {(m.status, m.attempts, m.started_at is not None) for m in started} == {(OutboxStatus.SENDING, 1, True)}
    assert {(m.status, m.attempts, m.started_at) for m in never_started} == {(OutboxStatus.SENDING, 0, None)}
    # The leases (120 s by default) are all still live by the database clock:
    # only the dead worker's stale heartbeat can bring the rows back now.
    assert OutboxMessage.objects.filter(locked_until__gt=Now()).count() == 30
    [dead] = WorkerHeartbeat.objects.all()

    survivor = start_worker("--once", smtp_port=smtp_server.port, log_path=tmp_path / "once.log", **FAST_STALENESS)
    assert survivor.wait(timeout=120) == 0

    assert not WorkerHeartbeat.objects.alive().filter(pk=dead.pk).exists()
    assert not OutboxMessage.objects.filter(status=OutboxStatus.SENDING).exists()
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 30
    ids = Counter(smtp_server.handler.message_ids())
    assert set(ids) == {m.message_id for m in messages}
    # Only the message the server had accepted from the killed worker went twice.
    assert [message_id for message_id, n in ids.items() if n > 1] == [messages[0].message_id]
    attempts = dict(OutboxMessage.objects.values_list("pk", "attempts"))
    assert {attempts[m.pk] for m in messages[:5]} == {2}
    assert {attempts[m.pk] for m in messages[5:]} == {1}
    assert set(OutboxMessage.objects.filter(interruptions=1).values_list("pk", flat=True)) == {
        m.pk for m in messages[:5]
    }


CRASHING = {"EMAIL_BACKEND": "tests.processes.CrashingEmailBackend", "OUTBOX_TEST_CRASH_ON": "crash@example.com"}


def _once_runs(smtp_server, tmp_path, runs: int) -> list[int]:
    codes = []
    for run in range(runs):
        # One sender: the six are marked started as one group (with more, each sender takes one, alone).
        worker = start_worker(
            "--once", "--concurrency", "1", smtp_port=smtp_server.port, log_path=tmp_path / f"run{run}.log",
            **CRASHING, **FAST_STALENESS,
        )  # fmt: skip
        codes.append(worker.wait(timeout=120))
    return codes


def test_a_message_that_kills_the_worker_twice_while_alone_is_failed_alone_and_its_neighbours_are_delivered(
    smtp_server, tmp_path
):
    messages = enqueue_messages(6)
    doomed = messages[2]
    OutboxMessage.objects.filter(pk=doomed.pk).update(to=["crash@example.com"])

    codes = _once_runs(smtp_server, tmp_path, 4)

    # Run 1 died with the six marked started as one group: that death makes all
    # six suspects but counts against none. Suspects go alone: runs 2 and 3 died
    # with the doomed one alone in flight; run 4 failed it unsent and delivered the rest.
    assert codes == [70, 70, 70, 0]
    doomed.refresh_from_db()
    assert doomed.status == OutboxStatus.FAILED
    assert (doomed.interruptions, doomed.solo_interruptions) == (3, 2)
    assert doomed.last_error.startswith("interrupted 2 times while it was the only one in flight")
    assert [a.outcome for a in doomed.delivery_attempts.all()] == [AttemptOutcome.ABANDONED]
    neighbours = OutboxMessage.objects.exclude(pk=doomed.pk)
    assert set(neighbours.values_list("status", flat=True)) == {OutboxStatus.SENT}
    assert max(neighbours.values_list("interruptions", flat=True)) == 1
    assert max(neighbours.values_list("solo_interruptions", flat=True)) == 0
    assert {m.message_id for m in messages if m.pk != doomed.pk} == set(smtp_server.handler.message_ids())


def test_a_lone_message_that_kills_the_worker_twice_is_failed_after_the_second_death(smtp_server, tmp_path):
    # The usual case on a quiet queue: one email in flight, and it is the culprit.
    [doomed] = enqueue_messages(1)
    OutboxMessage.objects.filter(pk=doomed.pk).update(to=["crash@example.com"])

    assert _once_runs(smtp_server, tmp_path, 3) == [70, 70, 0]
    doomed.refresh_from_db()
    assert (doomed.status, doomed.interruptions, doomed.solo_interruptions) == (OutboxStatus.FAILED, 2, 2)


def test_a_suspect_is_marked_started_only_once_its_connection_is_open(smtp_server, silent_server, tmp_path):
    # During an outage every try to connect takes a while (here: a server that
    # never greets). A suspect marked before connecting would count a second,
    # solo, interruption if its worker died meanwhile, and be failed unsent.
    [suspect] = enqueue_messages(1)
    OutboxMessage.objects.filter(pk=suspect.pk).update(interruptions=1)
    hung = start_worker(
        "--concurrency", "1", smtp_port=silent_server.port, log_path=tmp_path / "hung.log", **FAST_STALENESS
    )
    # Each try waits EMAIL_TIMEOUT (5 s) for a greeting that never comes.
    wait_until(lambda: silent_server.connections, what="the worker to connect")
    row = OutboxMessage.objects.get(pk=suspect.pk)
    assert (row.status, row.started_at, row.attempts) == (OutboxStatus.SENDING, None, 0)  # claimed, not started
    hung.kill()
    assert hung.wait(timeout=30) == -signal.SIGKILL

    survivor = start_worker("--once", smtp_port=smtp_server.port, log_path=tmp_path / "once.log", **FAST_STALENESS)
    assert survivor.wait(timeout=120) == 0
    row = OutboxMessage.objects.get(pk=suspect.pk)
    assert (row.status, row.attempts, row.interruptions, row.solo_interruptions) == (OutboxStatus.SENT, 1, 1, 0)
    assert smtp_server.handler.message_ids() == [suspect.message_id]


def test_outcomes_are_written_while_the_next_send_is_still_in_progress(smtp_server, tmp_path):
    first, second = enqueue_messages(2)
    smtp_server.handler.gate = threading.Event()
    smtp_server.handler.gate_skip = 1  # the first send goes through; the second hangs
    # One sender thread: with the default four, the backlog gives each message to
    # its own sender, and which one reaches the server first is a race.
    worker = start_worker(
        "--concurrency", "1", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log",
        OUTBOX_FINISH_EVERY="10", OUTBOX_FINISH_WITHIN="0.2",
    )  # fmt: skip
    try:
        smtp_server.handler.wait_at_gate(1)
        # Nothing but the keeper's flush can write it: the sender is blocked in the second send.
        wait_until(lambda: OutboxMessage.objects.get(pk=first.pk).status == OutboxStatus.SENT, what="first written")
        assert OutboxMessage.objects.get(pk=second.pk).status == OutboxStatus.SENDING
    finally:
        smtp_server.handler.gate.set()
        assert stop_worker(worker) == 0


def test_a_send_slower_than_the_lease_keeps_its_row_and_is_sent_once(smtp_server, tmp_path):
    [message] = enqueue_messages(1)
    smtp_server.handler.gate = threading.Event()
    slow = start_worker("--lease-seconds", "1", smtp_port=smtp_server.port, log_path=tmp_path / "slow.log")
    other = None
    try:
        smtp_server.handler.wait_at_gate(1)
        first_lease = OutboxMessage.objects.get(pk=message.pk).locked_until
        other = start_worker("--poll-interval", "0.1", smtp_port=smtp_server.port, log_path=tmp_path / "other.log")
        # Three lease lengths pass while the send hangs; the lease keeper keeps moving the expiry.
        wait_until(
            lambda: (OutboxMessage.objects.get(pk=message.pk).locked_until - first_lease).total_seconds() >= 3,
            what="the lease to be extended three times over",
        )
        smtp_server.handler.gate.set()
        smtp_server.handler.wait_for(1)
        wait_until(lambda: OutboxMessage.objects.get(pk=message.pk).status == OutboxStatus.SENT, what="sent")
    finally:
        smtp_server.handler.gate.set()
        codes = [stop_worker(slow)] + ([stop_worker(other)] if other else [])

    assert codes == [0, 0]
    assert len(smtp_server.handler.received) == 1
    message.refresh_from_db()
    assert message.attempts == 1
    assert "lease_lost" not in (tmp_path / "slow.log").read_text()


def test_the_worker_survives_losing_its_database_connections(smtp_server, tmp_path):
    enqueue_messages(10)
    worker = start_worker("--poll-interval", "0.2", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")
    try:
        smtp_server.handler.wait_for(10)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.rowcount >= 1
        enqueue_messages(10, subject="depois")
        smtp_server.handler.wait_for(20)
        wait_until(lambda: OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 20, what="20 sent")
    finally:
        code = stop_worker(worker)

    assert code == 0
    assert worker.returncode == 0
    assert not OutboxMessage.objects.filter(status=OutboxStatus.FAILED).exists()


def test_notify_wakes_an_idle_worker_without_waiting_for_the_poll(smtp_server, tmp_path):
    worker = start_worker("--poll-interval", "3600", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")
    try:
        wait_until(lambda: listener_pids(worker.pid), what="the worker to LISTEN")
        with transaction.atomic():
            enqueue_messages(1)
        # With an hour-long poll interval only the notification can explain a delivery.
        smtp_server.handler.wait_for(1)
    finally:
        assert stop_worker(worker) == 0


def test_a_listen_connection_killed_by_the_server_is_reopened(smtp_server, tmp_path):
    worker = start_worker("--poll-interval", "3600", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")
    try:
        [first] = wait_until(lambda: listener_pids(worker.pid), what="the worker to LISTEN")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [first])
        wait_until(lambda: listener_pids(worker.pid) - {first}, what="a new LISTEN connection")
        enqueue_messages(1)
        smtp_server.handler.wait_for(1)
    finally:
        assert stop_worker(worker) == 0
    assert (tmp_path / "worker.log").read_text().count("outbox.listen_connected") == 2


def test_polling_alone_delivers_when_notifications_are_off(smtp_server, tmp_path):
    worker = start_worker(
        "--no-notify", "--poll-interval", "0.2", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log"
    )
    try:
        wait_until(lambda: "outbox.worker_started" in (tmp_path / "worker.log").read_text(), what="start-up")
        assert "notify=false" in (tmp_path / "worker.log").read_text()
        assert listener_pids(worker.pid) == set()
        enqueue_messages(3)
        smtp_server.handler.wait_for(3)
    finally:
        assert stop_worker(worker) == 0


def test_concurrency_sends_over_several_connections_at_once(smtp_server, tmp_path):
    messages = enqueue_messages(200)
    smtp_server.handler.gate = threading.Event()
    # A batch of 40 shared by 4 threads: 10 each, so all four are busy at once
    # (a thread claiming all 40 would leave the other three idle).
    worker = start_worker(
        "--concurrency", "4", "--batch-size", "40", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log"
    )
    try:
        smtp_server.handler.wait_at_gate(4)  # four sends in flight from one process
        assert OutboxMessage.objects.filter(status=OutboxStatus.SENDING).count() == 40
        smtp_server.handler.gate.set()
        smtp_server.handler.wait_for(200)
    finally:
        smtp_server.handler.gate.set()
        assert stop_worker(worker) == 0

    ids = Counter(smtp_server.handler.message_ids())
    assert set(ids) == {m.message_id for m in messages}
    assert max(ids.values()) == 1


def test_a_provider_refusing_our_sender_pauses_delivery_without_failing_anything_until_it_accepts(
    smtp_server, tmp_path
):
    messages = enqueue_messages(10)
    smtp_server.handler.mail_replies.extend(["553 5.7.1 Sender address not verified"] * 10_000)
    worker = start_worker("--poll-interval", "0.2", smtp_port=smtp_server.port, log_path=tmp_path / "worker.log")

    def status() -> dict:
        out = io.StringIO()
        call_command("outbox_status", "--json", stdout=out)
        return json.loads(out.getvalue())

    try:
        paused = wait_until(lambda: (s := status())["delivery_paused"] and s, what="the pause in outbox_status")
        [paused_worker] = [w for w in paused["workers"] if w["paused_since"]]
        assert "553" in paused_worker["pause_reason"]
        # Let a probe fail too (its tries come after the first send's three).
        wait_until(lambda: smtp_server.handler.mail_commands >= 2 * 3, what="a failed probe")
        assert not OutboxMessage.objects.filter(status=OutboxStatus.FAILED).exists()
        # The operator fixes the sender domain: the provider accepts again.
        with smtp_server.handler.condition:
            smtp_server.handler.mail_replies.clear()
        smtp_server.handler.wait_for(10, timeout=120)
        wait_until(lambda: OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 10, what="10 sent")
        wait_until(lambda: not status()["delivery_paused"], what="the pause to end in outbox_status")
    finally:
        assert stop_worker(worker) == 0

    assert {m.message_id for m in messages} == set(smtp_server.handler.message_ids())
    # The refusals were about us, not the messages: none spent an attempt on them.
    assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {1}
    assert DeliveryAttempt.objects.filter(smtp_code=553).exists()


def test_greylisted_recipients_ahead_of_a_normal_one_do_not_hold_it_up(make_worker, smtp_server, settings):
    settings.OUTBOX_FIRST_RETRY = 30  # a backoff that outlasts the run, so "waits for it" can be read after
    greylisted = enqueue_messages(2)
    [normal] = enqueue_messages(1, to=["aluno9@example.com"])
    for message in greylisted:
        smtp_server.handler.rcpt_replies[message.to[0]] = "451 4.7.1 Greylisted, try again later"

    make_worker().run()

    # The normal message went out in the same run, while each greylisted one
    # had exactly one try and waits for its persisted backoff: no sender slept on it.
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [["aluno9@example.com"]]
    normal.refresh_from_db()
    assert normal.status == OutboxStatus.SENT
    for message in greylisted:
        message.refresh_from_db()
        assert (message.status, message.attempts) == (OutboxStatus.PENDING, 1)
        assert message.available_at > timezone.now()
        assert [(a.outcome, a.smtp_code) for a in message.delivery_attempts.all()] == [(AttemptOutcome.TRANSIENT, 451)]

    smtp_server.handler.rcpt_replies.clear()
    OutboxMessage.objects.filter(pk__in=[m.pk for m in greylisted]).update(available_at=timezone.now())
    make_worker().run()
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT, attempts=2).count() == 2


class DripServer:
    """An SMTP server that answers the DATA of one recipient's mail a byte at a time and never finishes.

    Each byte arrives well within the client's socket timeout, so only a
    deadline on the whole send can free the sender. Other mail is accepted.
    """

    def __init__(self, *, slow_recipient: str) -> None:
        self.slow_recipient = slow_recipient
        self.accepted: list[list[str]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def close(self) -> None:
        self._closed.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            conn.sendall(b"220 drip\r\n")
            recipients: list[str] = []
            while line := reader.readline():
                command = line.decode().strip()
                verb = command.split(" ")[0].upper()
                if verb == "RCPT":
                    recipients.append(command.split("<", 1)[1].rstrip(">"))
                if verb == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                if verb != "DATA":
                    conn.sendall(b"250 ok\r\n")
                    continue
                conn.sendall(b"354 go on\r\n")
                while reader.readline() not in (b".\r\n", b""):
                    pass
                if self.slow_recipient in recipients:
                    while not self._closed.is_set():  # "250 " forever, one byte at a time, never a line end
                        conn.sendall(b"2")
                        self._closed.wait(0.2)
                    return
                self.accepted.append(recipients)
                recipients = []
                conn.sendall(b"250 queued\r\n")
        except OSError:
            return  # the client cut the connection
        finally:
            conn.close()


def test_a_send_past_the_deadline_is_abandoned_and_the_sender_goes_on_to_the_next_message(tmp_path):
    server = DripServer(slow_recipient="aluno0@example.com")
    slow, normal = enqueue_messages(2)
    try:
        worker = start_worker(
            "--once", smtp_port=server.port, log_path=tmp_path / "worker.log", OUTBOX_SEND_DEADLINE="1",
            OUTBOX_FIRST_RETRY="30",  # a backoff that outlasts the run, so "handed back with it" can be read after
        )  # fmt: skip
        assert worker.wait(timeout=60) == 0
    finally:
        server.close()

    slow.refresh_from_db()
    assert (slow.status, slow.attempts, slow.locked_by) == (OutboxStatus.PENDING, 1, "")
    assert slow.available_at > timezone.now()  # handed back with the backoff, its attempt spent
    [abandoned] = slow.delivery_attempts.filter(outcome=AttemptOutcome.ABANDONED)
    assert "OUTBOX_SEND_DEADLINE" in abandoned.error == slow.last_error
    normal.refresh_from_db()
    assert normal.status == OutboxStatus.SENT
    assert server.accepted == [["aluno1@example.com"]]
    assert "outbox.send_deadline" in (tmp_path / "worker.log").read_text()
