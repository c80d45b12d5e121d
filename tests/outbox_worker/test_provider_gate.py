"""The provider gate, on an injected clock: pauses, probes, resumes, and when a refusal is one message's own.

Then what operators see of a pause: outbox_status (text, JSON, --max-age) and the admin's health panel.
"""

import json
import logging
import random
import smtplib
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from outbox_worker.errors import Blame, MessageCannotBeBuilt, classify
from outbox_worker.models import OutboxMessage, WorkerHeartbeat
from outbox_worker.provider import PROBE_POLL_SECONDS, ProviderGate
from tests.factories import enqueue_messages
from tests.staff import make_operator

SENDER_REFUSED = classify(smtplib.SMTPSenderRefused(553, b"5.7.1 sender address rejected", "nao-responda@example.com"))
SENDER_LATER = classify(smtplib.SMTPSenderRefused(451, b"4.3.0 try later", "nao-responda@example.com"))
CONNECTION_REFUSED = classify(ConnectionRefusedError(111, "Connection refused"))
SERVICE_CLOSING = classify(smtplib.SMTPSenderRefused(421, b"4.7.0 closing", "nao-responda@example.com"))
RECIPIENT_UNKNOWN = classify(smtplib.SMTPRecipientsRefused({"aluno@example.com": (550, b"5.1.1 no such user")}))
CANNOT_BE_BUILT = classify(MessageCannotBeBuilt("control character in a header"))
PAUSED_AT = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def saved() -> list[dict]:
    return []


@pytest.fixture
def gate(clock, saved) -> ProviderGate:
    """A gate with no jitter (each pause at its upper bound) that records what it would persist."""
    return ProviderGate(
        worker_id="w1", backoff=(1.0, 300.0), probe_timeout=60.0, clock=clock, now=lambda: PAUSED_AT,
        jitter=lambda low, high: high, persist=lambda **fields: saved.append(fields),
    )  # fmt: skip


def fail_probe(gate: ProviderGate, clock: FakeClock, verdict=CONNECTION_REFUSED) -> float:
    """Wait out the pause, be the probe, fail; return the new pause."""
    clock.advance(gate.admit().wait)
    admission = gate.admit()
    assert (admission.send, admission.probe) == (True, True)
    gate.record_failure(verdict, message_id=99, probe=True)
    return gate.admit().wait


def test_the_pause_doubles_from_one_second_up_to_five_minutes(gate):
    assert [gate.pause_for(n) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_jitter_shortens_each_pause_by_at_most_a_fifth():
    gate = ProviderGate(backoff=(1.0, 300.0), jitter=random.uniform, persist=lambda **fields: None)
    for failures, ceiling in [(1, 1.0), (4, 8.0), (20, 300.0)]:
        pauses = [gate.pause_for(failures) for _ in range(200)]
        assert all(0.8 * ceiling <= pause <= ceiling for pause in pauses)
        assert len(set(pauses)) > 1


def test_a_running_gate_admits_every_sender(gate):
    assert [(a.send, a.probe) for a in (gate.admit(), gate.admit())] == [(True, False), (True, False)]
    assert not gate.paused


def test_a_provider_failure_holds_every_sender_back_then_admits_exactly_one_probe(gate, clock):
    returned = gate.record_failure(CONNECTION_REFUSED, message_id=1)

    assert returned == CONNECTION_REFUSED
    assert (gate.paused_since, gate.reason) == (PAUSED_AT, CONNECTION_REFUSED.description)
    held = gate.admit()
    assert (held.send, held.wait) == (False, 1.0)

    clock.advance(1.0)
    first, second, third = gate.admit(), gate.admit(), gate.admit()

    assert (first.send, first.probe) == (True, True)
    assert [(a.send, a.probe, a.wait) for a in (second, third)] == [(False, False, PROBE_POLL_SECONDS)] * 2


def test_each_failed_probe_doubles_the_pause_and_the_first_success_resumes(gate, clock, saved):
    gate.record_failure(CONNECTION_REFUSED, message_id=1)

    assert [fail_probe(gate, clock) for _ in range(3)] == [2.0, 4.0, 8.0]

    clock.advance(8.0)
    probe = gate.admit()
    assert probe.probe
    clock.advance(0.5)
    gate.record_success(message_id=99)

    assert not gate.paused
    assert (gate.admit().send, gate.admit().probe) == (True, False)
    assert saved == [
        {"worker_id": "w1", "since": PAUSED_AT, "reason": CONNECTION_REFUSED.description},
        {"worker_id": "w1", "since": None, "reason": ""},
    ]
    # A new outage starts again from the first pause.
    gate.record_failure(CONNECTION_REFUSED, message_id=2)
    assert gate.admit().wait == 1.0


def test_retry_in_says_when_the_next_probe_may_go_without_taking_the_probe(gate, clock):
    assert gate.retry_in() == 0
    gate.record_failure(CONNECTION_REFUSED, message_id=1)
    clock.advance(0.25)

    assert gate.retry_in() == 0.75
    clock.advance(1.0)
    assert gate.retry_in() == 0
    assert gate.admit().probe  # asking retry_in() did not use up the probe


def test_a_send_that_began_before_the_pause_does_not_lengthen_it(gate, clock):
    gate.record_failure(CONNECTION_REFUSED, message_id=1)
    gate.record_failure(CONNECTION_REFUSED, message_id=2)  # a second sender's send, already in flight

    assert gate.admit().wait == 1.0


def test_a_probe_that_never_reports_is_replaced_after_the_probe_timeout(gate, clock):
    gate.record_failure(CONNECTION_REFUSED, message_id=1)
    clock.advance(1.0)
    assert gate.admit().probe

    clock.advance(59.0)
    assert not gate.admit().send
    clock.advance(1.0)
    assert gate.admit().probe


def test_the_provider_answering_about_a_message_resumes_delivery(gate, clock):
    gate.record_failure(CONNECTION_REFUSED, message_id=1)
    clock.advance(1.0)
    gate.admit()

    returned = gate.record_failure(RECIPIENT_UNKNOWN, message_id=2, probe=True)

    assert returned == RECIPIENT_UNKNOWN
    assert not gate.paused


def test_a_probe_whose_message_cannot_be_built_lets_another_sender_probe_at_once(gate, clock):
    gate.record_failure(CONNECTION_REFUSED, message_id=1)
    clock.advance(1.0)
    gate.admit()

    gate.record_failure(CANNOT_BE_BUILT, message_id=2, probe=True)

    assert gate.paused
    assert gate.admit().probe


def test_a_refusal_is_charged_to_its_message_once_another_message_got_through(gate, clock):
    assert gate.record_failure(SENDER_REFUSED, message_id=7).blame == Blame.PROVIDER
    clock.advance(1.0)
    assert gate.admit().probe
    gate.record_success(message_id=8)  # another message went through: the provider accepts our sender

    charged = gate.record_failure(SENDER_REFUSED, message_id=7)

    assert (charged.blame, charged.transient, charged.smtp_code) == (Blame.MESSAGE, False, 553)
    assert not gate.paused  # and it did not pause delivery again


def test_a_temporary_refusal_charged_to_its_message_stays_temporary(gate):
    gate.record_failure(SENDER_LATER, message_id=7)
    gate.record_success(message_id=8)

    charged = gate.record_failure(SENDER_LATER, message_id=7)

    assert (charged.blame, charged.transient) == (Blame.MESSAGE, True)


def test_a_refusal_is_not_charged_without_another_message_going_through(gate, clock):
    gate.record_failure(SENDER_REFUSED, message_id=7)
    for _ in range(5):
        clock.advance(gate.admit().wait)
        assert gate.admit().probe
        assert gate.record_failure(SENDER_REFUSED, message_id=7, probe=True).blame == Blame.PROVIDER


def test_a_provider_wide_refusal_never_burns_the_queue(gate, clock):
    # Every message refused, again and again, nothing accepted: none is charged.
    verdicts = [gate.record_failure(SENDER_REFUSED, message_id=n % 20) for n in range(200)]

    assert {v.blame for v in verdicts} == {Blame.PROVIDER}


def test_a_different_refusal_of_the_same_message_is_not_charged_to_it(gate):
    gate.record_failure(SENDER_REFUSED, message_id=7)
    gate.record_success(message_id=8)

    assert gate.record_failure(SENDER_LATER, message_id=7).blame == Blame.PROVIDER


@pytest.mark.parametrize("verdict", [CONNECTION_REFUSED, SERVICE_CLOSING], ids=["connection refused", "421"])
def test_failures_that_cannot_be_about_one_message_are_never_charged_to_it(gate, verdict):
    gate.record_failure(verdict, message_id=7)
    gate.record_success(message_id=8)

    assert gate.record_failure(verdict, message_id=7).blame == Blame.PROVIDER


def test_a_message_that_went_through_is_no_longer_a_suspect(gate):
    gate.record_failure(SENDER_REFUSED, message_id=7)
    gate.record_success(message_id=7)
    gate.record_success(message_id=8)

    assert gate.record_failure(SENDER_REFUSED, message_id=7).blame == Blame.PROVIDER


def test_pausing_and_resuming_are_logged_once_each_not_per_message(gate, clock, caplog):
    caplog.set_level(logging.INFO, logger="outbox_worker.provider")

    gate.record_failure(CONNECTION_REFUSED, message_id=1)
    for message_id in range(2, 6):  # other senders' in-flight sends fail the same way
        gate.record_failure(CONNECTION_REFUSED, message_id=message_id)
    for _ in range(3):
        fail_probe(gate, clock)
    clock.advance(gate.admit().wait)
    gate.admit()
    gate.record_success(message_id=9)
    gate.record_success(message_id=10)

    events = [(r.event, r.fields) for r in caplog.records if r.name == "outbox_worker.provider"]
    assert [event for event, _fields in events] == ["outbox.delivery_paused", "outbox.delivery_resumed"]
    assert events[0][1]["reason"] == CONNECTION_REFUSED.description
    assert events[1][1]["paused_for_s"] == 1.0 + 2.0 + 4.0 + 8.0


def test_a_new_reason_while_paused_is_announced_and_recorded(gate, clock, saved):
    gate.record_failure(CONNECTION_REFUSED, message_id=1)
    fail_probe(gate, clock, SENDER_REFUSED)

    assert gate.reason == SENDER_REFUSED.description
    assert [entry["reason"] for entry in saved] == [CONNECTION_REFUSED.description, SENDER_REFUSED.description]
    assert {entry["since"] for entry in saved} == {PAUSED_AT}


def test_a_database_error_while_recording_the_pause_does_not_stop_the_gate(clock, caplog):
    def broken(**fields):
        raise RuntimeError("database is down")

    gate = ProviderGate(worker_id="w1", clock=clock, persist=broken)

    assert gate.record_failure(CONNECTION_REFUSED, message_id=1) == CONNECTION_REFUSED
    assert gate.paused
    assert any(r.event == "outbox.pause_not_recorded" for r in caplog.records if hasattr(r, "event"))


@pytest.mark.django_db
def test_the_pause_is_recorded_on_the_workers_heartbeat_row(clock):
    now = timezone.now()
    WorkerHeartbeat.objects.create(worker_id="w1", hostname="h", pid=1, started_at=now, last_seen_at=now)
    WorkerHeartbeat.objects.create(worker_id="w2", hostname="h", pid=2, started_at=now, last_seen_at=now)
    gate = ProviderGate(worker_id="w1", clock=clock)

    gate.record_failure(SENDER_REFUSED, message_id=1)

    row = WorkerHeartbeat.objects.get(worker_id="w1")
    assert row.paused_since is not None and row.paused_since >= now
    assert row.pause_reason == SENDER_REFUSED.description
    assert WorkerHeartbeat.objects.get(worker_id="w2").paused_since is None

    gate.record_success(message_id=2)

    row.refresh_from_db()
    assert (row.paused_since, row.pause_reason) == (None, "")


# --- Operators see the pause: outbox_status and the admin's health panel ---------


def paused_worker() -> WorkerHeartbeat:
    """A live worker whose gate has paused delivery and recorded it, plus a running one."""
    now = timezone.now()
    WorkerHeartbeat.objects.create(worker_id="running:1:a", hostname="h", pid=1, started_at=now, last_seen_at=now)
    worker = WorkerHeartbeat.objects.create(
        worker_id="paused:2:b", hostname="h", pid=2, started_at=now, last_seen_at=now
    )
    ProviderGate(worker_id=worker.worker_id).record_failure(SENDER_REFUSED, message_id=1)
    worker.refresh_from_db()
    assert worker.paused_since is not None and worker.pause_reason == SENDER_REFUSED.description
    return worker


def overdue_message(minutes: int = 10) -> OutboxMessage:
    [message] = enqueue_messages(1)
    OutboxMessage.objects.filter(pk=message.pk).update(available_at=timezone.now() - timedelta(minutes=minutes))
    return message


@pytest.mark.django_db
def test_status_json_says_which_worker_paused_delivery_since_when_and_why(capsys):
    worker = paused_worker()

    call_command("outbox_status", "--json")

    data = json.loads(capsys.readouterr().out)
    assert data["delivery_paused"] is True
    by_id = {w["worker_id"]: w for w in data["workers"]}
    assert by_id["paused:2:b"]["paused_since"] == worker.paused_since.isoformat()
    assert by_id["paused:2:b"]["pause_reason"] == SENDER_REFUSED.description
    assert (by_id["running:1:a"]["paused_since"], by_id["running:1:a"]["pause_reason"]) == (None, "")


@pytest.mark.django_db
def test_status_json_says_delivery_is_not_paused_when_no_worker_is(capsys):
    now = timezone.now()
    WorkerHeartbeat.objects.create(worker_id="running:1:a", hostname="h", pid=1, started_at=now, last_seen_at=now)

    call_command("outbox_status", "--json")

    assert json.loads(capsys.readouterr().out)["delivery_paused"] is False


@pytest.mark.django_db
def test_status_text_says_entrega_pausada_desde_with_the_reason(capsys):
    worker = paused_worker()

    call_command("outbox_status")

    out = capsys.readouterr().out
    since = timezone.localtime(worker.paused_since).strftime("%d/%m/%Y %H:%M:%S")
    assert f"entrega pausada desde {since} : {SENDER_REFUSED.description}" in out
    assert out.count("entrega pausada desde") == 1  # only the paused worker


@pytest.mark.django_db
def test_max_age_still_alerts_while_delivery_is_paused():
    paused_worker()
    overdue_message(minutes=10)

    call_command("outbox_status", "--max-age", "3600")  # fine: waited 10 minutes
    with pytest.raises(CommandError, match=r"esperou .*entrega pausada desde") as error:
        call_command("outbox_status", "--max-age", "300")
    assert error.value.returncode == 2


@pytest.mark.django_db
def test_the_admin_health_panel_shows_the_pause(client):
    worker = paused_worker()
    client.force_login(make_operator())

    response = client.get(reverse("admin:outbox_worker_outboxmessage_changelist"))

    html = response.content.decode()
    since = timezone.localtime(worker.paused_since).strftime("%d/%m/%Y %H:%M:%S")
    assert f"Entrega pausada desde {since}</strong>" in html
    assert escape(SENDER_REFUSED.description) in html
    assert [w.worker_id for w in response.context["health"].paused_workers] == ["paused:2:b"]


@pytest.mark.django_db
def test_the_admin_health_panel_says_nothing_of_a_pause_when_there_is_none(client):
    now = timezone.now()
    WorkerHeartbeat.objects.create(worker_id="running:1:a", hostname="h", pid=1, started_at=now, last_seen_at=now)
    client.force_login(make_operator())

    html = client.get(reverse("admin:outbox_worker_outboxmessage_changelist")).content.decode()

    assert "Entrega pausada" not in html
    assert "entrega pausada" not in html
