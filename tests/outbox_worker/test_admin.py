"""The outbox admin through the test client: permissions, confirmation pages, refusals, audit log, speed."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.urls import reverse
from django.utils import timezone

from backend.enrollments.services import enrollment_create
from outbox_worker.models import AttemptOutcome, DeliveryAttempt, OutboxMessage, OutboxStatus, WorkerHeartbeat
from tests.factories import enqueue_messages, make_product
from tests.staff import make_operator, make_staff

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:outbox_worker_outboxmessage_changelist")


def _detail(message: OutboxMessage) -> str:
    return reverse("admin:outbox_worker_outboxmessage_change", args=[message.pk])


def _set(message: OutboxMessage, **fields) -> None:
    OutboxMessage.objects.filter(pk=message.pk).update(**fields)
    message.refresh_from_db()


def _hold(message: OutboxMessage, *, worker_alive: bool = True) -> None:
    """Make `message` held by worker-1, whose heartbeat is fresh (alive) or 10 minutes old (dead)."""
    seen = timezone.now() - (timedelta(0) if worker_alive else timedelta(minutes=10))
    WorkerHeartbeat.objects.update_or_create(
        worker_id="worker-1", defaults={"hostname": "h", "pid": 1, "started_at": seen, "last_seen_at": seen}
    )
    _set(message, status=OutboxStatus.SENDING, locked_by="worker-1", locked_until=timezone.now() + timedelta(minutes=2))


def _run_action(client, action: str, *messages: OutboxMessage, confirm: bool = True):
    data = {"action": action, "_selected_action": [m.pk for m in messages]}
    if confirm:
        data["post"] = "yes"
    return client.post(CHANGELIST, data, follow=confirm)


@pytest.fixture
def operator_client(client):
    client.force_login(make_operator())
    return client


# --- the confirmation page ----------------------------------------------------


def test_first_post_of_an_action_only_shows_what_would_happen_to_each_row(operator_client):
    failed, held, pending = enqueue_messages(3)
    _set(failed, status=OutboxStatus.FAILED, last_error="550 5.1.1 no such user")
    _hold(held)

    response = _run_action(operator_client, "resend_messages", failed, held, pending, confirm=False)

    assert response.status_code == 200
    assert response.templates[0].name == "admin/outbox_worker/action_confirmation.html"
    rows = {row.pk: row for row in response.context["rows"]}
    assert rows[failed.pk].allowed and "volta para a fila" in rows[failed.pk].description
    assert not rows[held.pk].allowed and "um worker está entregando agora" in rows[held.pk].description
    assert not rows[pending.pk].allowed and "já está na fila" in rows[pending.pk].description
    assert b"Sim, reenviar 1 item" in response.content
    # Nothing changed yet, and nothing was logged.
    failed.refresh_from_db()
    assert failed.status == OutboxStatus.FAILED
    assert not LogEntry.objects.exists()


# --- resend -------------------------------------------------------------------


def test_resend_of_a_failed_message_requeues_it_and_logs_who_did_it(operator_client):
    [message] = enqueue_messages(1)
    _set(message, status=OutboxStatus.FAILED, attempts=3, last_error="550 5.1.1 no such user")

    response = _run_action(operator_client, "resend_messages", message)

    message.refresh_from_db()
    assert (message.status, message.attempts) == (OutboxStatus.PENDING, 3)
    assert message.max_attempts > message.attempts
    assert message.available_at <= timezone.now()
    assert OutboxMessage.objects.count() == 1
    # A single message: back to its page, to watch it go out.
    assert response.redirect_chain[-1][0] == _detail(message)
    entry = LogEntry.objects.get()
    assert (entry.user.username, entry.object_id, entry.action_flag) == ("operadora", str(message.pk), CHANGE)
    assert entry.change_message == "Reenvio: feito"


def test_resend_of_a_sent_message_queues_a_new_row_and_keeps_the_original(operator_client):
    [message] = enqueue_messages(1)
    _set(message, status=OutboxStatus.SENT, attempts=1, sent_at=timezone.now())

    _run_action(operator_client, "resend_messages", message)

    copy = OutboxMessage.objects.exclude(pk=message.pk).get()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert (copy.status, copy.resent_from_id, copy.to, copy.subject) == (
        OutboxStatus.PENDING,
        message.pk,
        message.to,
        message.subject,
    )
    assert copy.message_id != message.message_id
    logged = set(LogEntry.objects.values_list("object_id", "action_flag", "change_message"))
    assert logged == {
        (str(message.pk), CHANGE, f"Reenvio: cópia #{copy.pk} criada"),
        (str(copy.pk), ADDITION, f"Reenvio: cópia de #{message.pk}"),
    }


def test_resend_of_a_sent_message_that_breaks_todays_header_rule_is_refused_not_a_500(operator_client):
    # A row written before the header-text rule existed, with a vertical tab in
    # its subject: the copy cannot be queued, and the operator is told why.
    [message] = enqueue_messages(1)
    _set(message, status=OutboxStatus.SENT, attempts=1, sent_at=timezone.now(), subject="Olá\x0bmundo")

    response = _run_action(operator_client, "resend_messages", message)

    assert response.status_code in (200, 302)
    assert OutboxMessage.objects.count() == 1
    assert not LogEntry.objects.filter(action_flag=ADDITION).exists()


def test_staff_without_the_resend_permission_cannot_resend(client):
    may_retry_and_cancel = ["outbox_worker.view_outboxmessage", "outbox_worker.change_outboxmessage"]
    client.force_login(make_staff("estagiario", *may_retry_and_cancel))
    [message] = enqueue_messages(1)
    _set(message, status=OutboxStatus.FAILED)

    page = client.get(_detail(message))
    response = _run_action(client, "resend_messages", message)

    assert b"detail-action-resend_messages" not in page.content
    assert "resend_messages" not in dict(client.get(CHANGELIST).context["action_form"].fields["action"].choices)
    assert "Nenhuma ação selecionada" in response.content.decode()
    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    assert OutboxMessage.objects.count() == 1
    assert not LogEntry.objects.exists()


def test_a_row_a_worker_holds_is_refused_by_every_action(operator_client):
    [message] = enqueue_messages(1)
    _hold(message)
    before = (message.status, message.locked_by, message.locked_until, message.available_at)

    for action in ["resend_messages", "retry_now", "cancel_messages"]:
        response = _run_action(operator_client, action, message)
        assert "um worker está entregando agora" in response.content.decode()

    message.refresh_from_db()
    assert (message.status, message.locked_by, message.locked_until, message.available_at) == before
    assert OutboxMessage.objects.count() == 1
    assert set(LogEntry.objects.values_list("change_message", flat=True)) == {
        "Reenvio recusado: um worker está entregando agora",
        "Tentar agora recusado: um worker está entregando agora",
        "Cancelamento recusado: um worker está entregando agora",
    }


# --- retry now and cancel -------------------------------------------------------


def test_retry_now_makes_a_message_in_backoff_due_now(operator_client):
    [message] = enqueue_messages(1)
    _set(message, available_at=timezone.now() + timedelta(minutes=30), attempts=1, last_error="451 tente depois")

    _run_action(operator_client, "retry_now", message)

    message.refresh_from_db()
    assert message.available_at <= timezone.now()
    assert LogEntry.objects.get().change_message == "Tentar agora: feito"


def test_cancel_stops_a_pending_message_and_refuses_a_sent_one(operator_client):
    pending, sent = enqueue_messages(2)
    _set(sent, status=OutboxStatus.SENT)

    response = _run_action(operator_client, "cancel_messages", pending, sent)

    pending.refresh_from_db()
    sent.refresh_from_db()
    assert (pending.status, sent.status) == (OutboxStatus.CANCELLED, OutboxStatus.SENT)
    assert "já foi enviada, falhou ou foi cancelada" in response.content.decode()


@pytest.mark.parametrize("action", ["retry_now", "cancel_messages"])
def test_staff_who_may_only_view_cannot_retry_or_cancel(client, action):
    client.force_login(make_staff("leitora", "outbox_worker.view_outboxmessage"))
    [message] = enqueue_messages(1)
    _set(message, available_at=timezone.now() + timedelta(minutes=30))

    _run_action(client, action, message)

    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    assert message.available_at > timezone.now()


def test_an_action_on_too_many_rows_is_refused_before_loading_them(operator_client, monkeypatch):
    monkeypatch.setattr("outbox_worker.admin_actions.ACTION_LIMIT", 2)
    messages = enqueue_messages(3)

    response = operator_client.post(
        CHANGELIST, {"action": "cancel_messages", "_selected_action": [m.pk for m in messages]}, follow=True
    )

    assert response.templates[0].name != "admin/outbox_worker/action_confirmation.html"
    assert "no máximo 2 itens" in response.content.decode()
    assert not OutboxMessage.objects.filter(status=OutboxStatus.CANCELLED).exists()


# --- the detail page -----------------------------------------------------------


def test_detail_shows_the_email_safely_its_attempts_and_its_enrollment(operator_client):
    enrollment = enrollment_create(product=make_product(name="Python"), name="Ana", email="ana@example.com")
    message = OutboxMessage.objects.get()
    _set(
        message,
        body_html='<p>Olá</p><script>alert("x")</script>"><img src=x onerror=alert(1)>',
        status=OutboxStatus.FAILED,
        attempts=1,
        last_error="550 5.1.1 no such user",
    )
    now = timezone.now()
    DeliveryAttempt.objects.create(
        message=message,
        attempt=1,
        worker="worker-1",
        started_at=now,
        finished_at=now,
        outcome=AttemptOutcome.PERMANENT,
        smtp_code=550,
        error="550 5.1.1 no such user",
    )

    html = operator_client.get(_detail(message)).content.decode()

    assert 'sandbox=""' in html
    assert 'srcdoc="&lt;!DOCTYPE html&gt;&lt;meta http-equiv=&quot;Content-Security-Policy&quot;' in html
    assert "&gt;&lt;p&gt;Olá&lt;/p&gt;&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&quot;&gt;&lt;img" in html
    assert "<script>alert" not in html
    assert "Matrícula confirmada: Python" in html  # text body and subject
    assert message.message_id.replace("<", "&lt;").replace(">", "&gt;") in html
    assert "550 5.1.1 no such user" in html
    assert "erro permanente" in html
    assert reverse("admin:enrollments_enrollment_change", args=[enrollment.pk]) in html
    assert "detail-action-resend_messages" in html
    assert "detail-action-cancel_messages" not in html  # a failed message cannot be cancelled


# --- the list ----------------------------------------------------------------------


def test_changelist_filters_by_status_and_kind_and_searches_by_enrollment(operator_client):
    confirmation = enrollment_create(product=make_product(), name="Ana", email="ana@example.com")
    [other] = enqueue_messages(1, kind="aviso")
    _set(other, status=OutboxStatus.FAILED)

    def listed(query):
        return {m.pk for m in operator_client.get(CHANGELIST, query).context["cl"].result_list}

    confirmation_message = OutboxMessage.objects.get(kind="enrollment_confirmation")
    assert listed({"status__exact": "failed"}) == {other.pk}
    assert listed({"kind": "enrollment_confirmation"}) == {confirmation_message.pk}
    assert listed({"q": f"matrícula {confirmation.pk}"}) == {confirmation_message.pk}
    assert listed({"q": other.message_id}) == {other.pk}


def test_changelist_shows_the_health_panel(operator_client):
    [message] = enqueue_messages(1)
    _set(message, available_at=timezone.now() - timedelta(minutes=20))

    response = operator_client.get(CHANGELIST)

    html = response.content.decode()
    assert "Saúde da outbox" in html
    assert response.context["health"].due_now == 1
    assert "20\xa0minutos" in html  # timesince joins with a no-break space
    assert len(response.context["chart"]) >= 24


def test_changelist_says_more_than_when_it_stopped_counting(operator_client, monkeypatch):
    monkeypatch.setattr("outbox_worker.selectors.COUNT_CAP", 5)
    enqueue_messages(7)

    html = operator_client.get(CHANGELIST).content.decode()

    assert "mais de 5 mensagens da outbox" in html


def test_changelist_query_count_does_not_grow_with_rows(operator_client, django_assert_max_num_queries):
    # session, user, permissions, health panel (status counts, due, chart, workers
    # live and dead, rows left behind), kind filter, capped count, one page of
    # rows, their source labels: 21 queries, whatever the row count.
    product = make_product()
    for i in range(3):
        enrollment_create(product=product, name=f"Aluno {i}", email=f"aluno{i}@example.com")
    with django_assert_max_num_queries(22):  # the health panel counts each status (suppressed too)
        assert operator_client.get(CHANGELIST).status_code == 200

    messages = enqueue_messages(60, kind="aviso")
    for message in messages:
        DeliveryAttempt.objects.create(
            message=message,
            attempt=1,
            worker="w",
            started_at=timezone.now(),
            finished_at=timezone.now(),
            outcome=AttemptOutcome.SENT,
        )
    with django_assert_max_num_queries(22):  # the health panel counts each status (suppressed too)
        response = operator_client.get(CHANGELIST)
    assert len(response.context["cl"].result_list) == 50
