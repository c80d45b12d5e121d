"""The admin tells the operator the truth: errors explained, live/stopped/dead workers, pt-BR whatever the browser."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from backend.enrollments.services import enrollment_create
from outbox_worker.conf import outbox_settings
from outbox_worker.models import OutboxMessage, OutboxStatus, WorkerHeartbeat
from tests.factories import enqueue_messages, make_product
from tests.staff import make_operator, make_staff

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:outbox_worker_outboxmessage_changelist")
USER_UNKNOWN = "SMTPRecipientsRefused: {'carla@exemplo.com': (550, b'5.1.1 <carla@exemplo.com>: User unknown')}"


def _detail(message: OutboxMessage) -> str:
    return reverse("admin:outbox_worker_outboxmessage_change", args=[message.pk])


def _set(message: OutboxMessage, **fields) -> None:
    OutboxMessage.objects.filter(pk=message.pk).update(**fields)
    message.refresh_from_db()


def _heartbeat(worker_id: str, *, seen_ago: timedelta = timedelta(0), stopped: bool = False) -> WorkerHeartbeat:
    seen = timezone.now() - seen_ago
    return WorkerHeartbeat.objects.create(
        worker_id=worker_id,
        hostname="h",
        pid=1,
        started_at=seen,
        last_seen_at=seen,
        stopped_at=seen if stopped else None,
    )


@pytest.fixture
def operator_client(client):
    client.force_login(make_operator())
    return client


# --- one language ------------------------------------------------------------------


def test_an_english_browser_gets_the_admin_in_portuguese_and_the_api_in_english(operator_client):
    enqueue_messages(1)

    admin_page = operator_client.get(CHANGELIST, HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")
    api = operator_client.get("/api/products/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")

    html = admin_page.content.decode()
    assert admin_page["Content-Language"] == "pt-br"
    assert '<html lang="pt-br"' in html
    assert "Por situação" in html and "By situação" not in html
    assert "Select mensagem" not in html
    assert api["Content-Language"] == "en"


def test_kinds_and_sources_have_human_labels_from_the_host(operator_client):
    enrollment = enrollment_create(product=make_product(), name="Ana Souza", email="ana@example.com")
    message = OutboxMessage.objects.get()

    html = operator_client.get(_detail(message)).content.decode()

    assert "Confirmação de matrícula" in html
    assert f"Matrícula #{enrollment.pk} — Ana Souza" in html
    assert "enrollments.enrollment:" not in html.split("Entrega (técnico)")[0]
    filters = operator_client.get(CHANGELIST).content.decode()
    assert "Confirmação de matrícula" in filters


def test_flash_messages_are_grammatical(operator_client):
    one, two, three = enqueue_messages(3)
    for message in (one, two, three):
        _set(message, status=OutboxStatus.FAILED)

    single = operator_client.post(
        CHANGELIST, {"action": "resend_messages", "_selected_action": [one.pk], "post": "yes"}, follow=True
    )
    plural = operator_client.post(
        CHANGELIST, {"action": "resend_messages", "_selected_action": [two.pk, three.pk], "post": "yes"}, follow=True
    )

    assert "Reenvio: 1 mensagem alterada." in single.content.decode()
    assert "Reenvio: 2 mensagens alteradas." in plural.content.decode()
    assert "(ns)" not in single.content.decode() + plural.content.decode()


# --- failures explained ------------------------------------------------------------------


def test_a_failed_message_says_what_happened_and_what_to_do_with_the_raw_text_behind_a_toggle(operator_client):
    [message] = enqueue_messages(1)
    _set(message, status=OutboxStatus.FAILED, attempts=1, last_error=USER_UNKNOWN)

    html = operator_client.get(_detail(message)).content.decode()

    assert "O endereço não existe." in html
    assert "Confira o endereço com o aluno" in html
    assert '<details class="outbox-raw-error"><summary>detalhes técnicos</summary>' in html
    assert "5.1.1 &lt;carla@exemplo.com&gt;: User unknown" in html
    assert "outbox-last-error outbox-error-history" not in html
    # The attempts say what their numbers are.
    assert f"1 de {message.max_attempts} envios permitidos iniciado" in html
    assert "uma falha do provedor não conta" in html


def test_once_queued_again_the_error_is_shown_as_history(operator_client):
    [message] = enqueue_messages(1)
    _set(message, status=OutboxStatus.FAILED, attempts=5, last_error=f"attempts exhausted (5/5): {USER_UNKNOWN}")
    operator_client.post(CHANGELIST, {"action": "resend_messages", "_selected_action": [message.pk], "post": "yes"})
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING

    html = operator_client.get(_detail(message)).content.decode()

    assert "outbox-error-history" in html
    assert "erro anterior (a mensagem voltou à fila depois dele)" in html
    # A fresh budget on top of the attempts already used.
    assert f"5 de {5 + outbox_settings.MAX_ATTEMPTS} envios permitidos iniciados" in html


def test_the_message_page_polls_its_status_with_our_own_script_while_it_is_on_its_way(operator_client):
    [message] = enqueue_messages(1)

    html = operator_client.get(_detail(message)).content.decode()
    status = operator_client.get(reverse("admin:outbox_worker_outboxmessage_status", args=[message.pk]))

    assert 'src="/static/outbox_worker/status_poll.js"' in html
    assert f'data-poll-url="/admin/outbox_worker/outboxmessage/{message.pk}/status/"' in html
    assert 'data-status="pending"' in html
    assert status.json() == {"status": "pending", "attempts": 0}


def test_the_status_poll_is_only_for_staff_who_may_view_messages(client):
    [message] = enqueue_messages(1)
    url = reverse("admin:outbox_worker_outboxmessage_status", args=[message.pk])
    client.force_login(make_staff("sem-permissao"))

    response = client.get(url)

    assert response.status_code in (403, 404)
    assert "pending" not in response.content.decode()


# --- truthful worker health ------------------------------------------------------------


def test_the_health_panel_shows_live_stopped_and_dead_workers_with_last_seen(operator_client):
    _heartbeat("live:1:a")
    _heartbeat("stopped:2:b", seen_ago=timedelta(minutes=2), stopped=True)
    _heartbeat("dead:3:c", seen_ago=timedelta(minutes=3))
    [message] = enqueue_messages(1)
    _set(message, status=OutboxStatus.SENDING, locked_by="dead:3:c", locked_until=timezone.now() + timedelta(minutes=1))

    html = operator_client.get(CHANGELIST).content.decode()

    assert '<div class="n live-workers">1</div>' in html
    assert 'class="label worker-live"' in html and "live:1:a" in html
    assert 'class="label worker-stopped"' in html and "parado em" in html
    assert 'class="label worker-dead"' in html and "morto (sem sinal de vida), visto por último em" in html
    assert "deixou 1 mensagem em envio" in html
    assert "1 em envio sem worker vivo" in html


def test_a_row_held_by_a_dead_worker_says_when_it_comes_back_and_can_be_handed_back(operator_client):
    _heartbeat("dead:3:c", seen_ago=timedelta(minutes=3))
    _heartbeat("live:1:a")
    [message] = enqueue_messages(1)
    _set(
        message,
        status=OutboxStatus.SENDING,
        locked_by="dead:3:c",
        locked_until=timezone.now() + timedelta(minutes=1),
        started_at=timezone.now(),
        attempts=1,
    )

    html = operator_client.get(_detail(message)).content.decode()
    assert "presa a um worker parado (dead:3:c" in html
    assert "detail-action-requeue_messages" in html
    assert "detail-action-cancel_messages" in html

    plan = operator_client.post(CHANGELIST, {"action": "requeue_messages", "_selected_action": [message.pk]})
    assert "volta para a fila agora; um worker vivo a envia" in plan.content.decode()
    operator_client.post(CHANGELIST, {"action": "requeue_messages", "_selected_action": [message.pk], "post": "yes"})

    message.refresh_from_db()
    assert (message.status, message.locked_by, message.locked_until) == (OutboxStatus.PENDING, "", None)
    assert message.available_at <= timezone.now()
    # Counted as the claim would have counted it: the dead worker was sending it.
    assert (message.attempts, message.interruptions, message.started_at) == (1, 1, None)
    assert LogEntry.objects.get().change_message == "Devolução à fila: feito"


def test_a_row_a_live_worker_holds_is_never_handed_back(operator_client):
    _heartbeat("live:1:a")
    [message] = enqueue_messages(1)
    until = timezone.now() + timedelta(minutes=1)
    _set(message, status=OutboxStatus.SENDING, locked_by="live:1:a", locked_until=until)

    html = operator_client.get(_detail(message)).content.decode()
    assert "um worker está entregando agora (live:1:a)" in html
    assert "detail-action-requeue_messages" not in html

    response = operator_client.post(
        CHANGELIST, {"action": "requeue_messages", "_selected_action": [message.pk], "post": "yes"}, follow=True
    )

    assert "um worker está entregando agora" in response.content.decode()
    message.refresh_from_db()
    assert (message.status, message.locked_by, message.locked_until) == (OutboxStatus.SENDING, "live:1:a", until)


def test_staff_who_may_only_view_cannot_hand_rows_back(client):
    client.force_login(make_staff("leitora", "outbox_worker.view_outboxmessage"))
    _heartbeat("dead:3:c", seen_ago=timedelta(minutes=3))
    [message] = enqueue_messages(1)
    _set(message, status=OutboxStatus.SENDING, locked_by="dead:3:c", locked_until=timezone.now() + timedelta(minutes=1))

    client.post(CHANGELIST, {"action": "requeue_messages", "_selected_action": [message.pk], "post": "yes"})

    message.refresh_from_db()
    assert message.status == OutboxStatus.SENDING


def test_prune_removes_stopped_and_dead_heartbeats_but_never_a_live_one(capsys):
    _heartbeat("live:1:a")
    _heartbeat("stopped:2:b", seen_ago=timedelta(days=40), stopped=True)
    _heartbeat("dead:3:c", seen_ago=timedelta(days=40))
    _heartbeat("dead-recent:4:d", seen_ago=timedelta(days=1))

    call_command("outbox_prune", "--older-than", "30d")

    assert "deleted 2 heartbeats" in capsys.readouterr().out
    assert sorted(WorkerHeartbeat.objects.values_list("worker_id", flat=True)) == ["dead-recent:4:d", "live:1:a"]
    call_command("outbox_prune", "--older-than", "0s")
    assert list(WorkerHeartbeat.objects.values_list("worker_id", flat=True)) == ["live:1:a"]


def test_the_enrollment_list_speaks_grammatical_portuguese(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("chefe", "chefe@example.com", "x"))
    enrollment_create(product=make_product(), name="Ana Souza", email="ana@example.com")

    html = client.get(reverse("admin:enrollments_enrollment_changelist"), HTTP_ACCEPT_LANGUAGE="en-US").content.decode()

    assert "Remover matrículas selecionadas" in html
    assert "matrículas selecionados" not in html
