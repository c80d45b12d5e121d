"""The suppression list: held at claim (the one place that decides it), lifted by a permitted operator."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.utils import timezone, translation
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from backend.enrollments.services import enrollment_create
from outbox_worker.explain import explain
from outbox_worker.models import DeliveryEvent, OutboxMessage, OutboxStatus, Suppression, SuppressionReason
from outbox_worker.services import outbox_prune, outbox_resend
from outbox_worker.suppression import suppressed_reason, suppression_add, suppression_lift
from tests.factories import enqueue_messages, make_product
from tests.staff import make_staff

pytestmark = pytest.mark.django_db

SUPPRESSIONS = "/admin/outbox_worker/suppression/"


def suppress(address: str, reason: SuppressionReason = SuppressionReason.HARD_BOUNCE) -> Suppression:
    return suppression_add(address=address, reason=reason, detail="smtp;550 5.1.1 user unknown")


@pytest.mark.django_db(transaction=True)
def test_an_email_to_a_suppressed_address_is_held_as_suppressed_with_the_reason(make_worker, smtp_server):
    suppress("carla@example.com")

    [message] = enqueue_messages(1, to=["Carla <CARLA@example.com>"])
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING  # the enqueue does not look: the claim decides

    make_worker().run()

    message.refresh_from_db()
    assert (message.status, message.attempts) == (OutboxStatus.SUPPRESSED, 0)
    assert "hard_bounce" in message.last_error and "5.1.1" in message.last_error
    assert smtp_server.handler.received == []


@pytest.mark.django_db(transaction=True)
def test_one_suppressed_recipient_among_several_holds_the_email_with_that_address_s_reason(make_worker, smtp_server):
    suppress("bruno@example.com", SuppressionReason.COMPLAINT)
    lifted = suppress("ana@example.com")
    suppression_lift(suppression_ids=[lifted.pk], user_id=None)

    [held] = enqueue_messages(1, to=["ana@example.com"], cc=["Bruno <BRUNO@example.com>"])
    [sent] = enqueue_messages(1, to=["ana@example.com"])
    make_worker().run()

    held.refresh_from_db()
    sent.refresh_from_db()
    assert (held.status, suppressed_reason(held.last_error)) == (OutboxStatus.SUPPRESSED, SuppressionReason.COMPLAINT)
    assert "bruno@example.com" in held.last_error
    assert (sent.status, sent.last_error) == (OutboxStatus.SENT, "")
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [["ana@example.com"]]


@pytest.mark.django_db(transaction=True)
def test_the_enrollment_is_still_created_and_the_staff_api_says_suppressed(make_worker, smtp_server):
    suppress("carla@example.com", SuppressionReason.COMPLAINT)

    enrollment = enrollment_create(product=make_product(), name="Carla Dias", email="carla@example.com")
    make_worker().run()

    staff = make_staff("equipe", "enrollments.view_enrollment")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    body = api.get(f"/api/enrollments/{enrollment.pk}/").json()
    assert body["email_status"] == "suppressed"
    assert body["email_delivery_status"] == ""


def test_a_second_suppression_of_the_same_address_is_a_no_op():
    assert suppress("carla@example.com") is not None
    assert suppress("Carla@Example.com ") is None
    assert Suppression.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_worker_holds_a_message_whose_address_was_suppressed_after_enqueue(make_worker, smtp_server):
    carla, bruno = enqueue_messages(2, to=["carla@example.com"])[0], enqueue_messages(1, to=["bruno@example.com"])[0]
    suppress("carla@example.com")

    make_worker().run()

    carla.refresh_from_db()
    bruno.refresh_from_db()
    assert (carla.status, carla.attempts, carla.locked_by) == (OutboxStatus.SUPPRESSED, 0, "")
    assert bruno.status == OutboxStatus.SENT
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [["bruno@example.com"]]


@pytest.mark.django_db(transaction=True)
def test_lifting_sends_nothing_until_the_operator_resends(make_worker, smtp_server, client):
    suppression = suppress("carla@example.com")
    [message] = enqueue_messages(1, to=["carla@example.com"])
    make_worker().run()  # held at claim
    client.force_login(make_staff("supervisora", "outbox_worker.view_suppression", "outbox_worker.lift_suppression"))

    response = client.post(
        SUPPRESSIONS, {"action": "lift", "_selected_action": [suppression.pk]}, follow=True,
        HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9",
    )  # fmt: skip

    assert response.status_code == 200
    # English message ids, pt-BR on the page whatever the browser asks for.
    assert "1 endereço retirado da lista de supressão (carla@example.com)" in response.content.decode()
    suppression.refresh_from_db()
    assert suppression.lifted_at is not None and suppression.lifted_by.username == "supervisora"
    entry = LogEntry.objects.get(object_id=str(suppression.pk))
    assert (entry.action_flag, entry.change_message) == (CHANGE, "Supressão retirada")
    make_worker().run()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SUPPRESSED
    assert smtp_server.handler.received == []

    with transaction.atomic():
        report = outbox_resend(message_ids=[message.pk])
    assert report.changed == [message.pk]
    make_worker().run()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [["carla@example.com"]]


def test_staff_without_the_lift_permission_cannot_lift(client):
    suppression = suppress("carla@example.com")
    client.force_login(make_staff("leitora", "outbox_worker.view_suppression"))

    client.post(SUPPRESSIONS, {"action": "lift", "_selected_action": [suppression.pk]}, follow=True)

    suppression.refresh_from_db()
    assert suppression.lifted_at is None
    assert not LogEntry.objects.exists()


def test_a_resent_message_to_a_still_suppressed_address_is_held_again_at_claim(make_worker, smtp_server):
    suppress("carla@example.com")
    [message] = enqueue_messages(1, to=["carla@example.com"])

    outbox_resend(message_ids=[message.pk])
    assert OutboxMessage.objects.get(pk=message.pk).status == OutboxStatus.PENDING
    make_worker().run()

    message.refresh_from_db()
    assert message.status == OutboxStatus.SUPPRESSED
    assert smtp_server.handler.received == []


def test_the_suppression_list_page_finds_an_address(client):
    suppress("carla@example.com")
    suppress("bruno@example.com", SuppressionReason.COMPLAINT)
    client.force_login(make_staff("leitora", "outbox_worker.view_suppression"))

    response = client.get(SUPPRESSIONS, {"q": "Carla@Example.com"})

    assert response.status_code == 200
    assert [s.address for s in response.context["cl"].result_list] == ["carla@example.com"]


def test_pruning_a_message_takes_its_events_and_keeps_the_suppression():
    [message] = enqueue_messages(1, to=["carla@example.com"])
    event = DeliveryEvent.objects.create(message=message, provider="postmark", event_id="1", event_type="bounced")
    suppression_add(address="carla@example.com", reason=SuppressionReason.HARD_BOUNCE, detail="550 5.1.1", event=event)
    OutboxMessage.objects.filter(pk=message.pk).update(status=OutboxStatus.SENT)

    assert outbox_prune(before=timezone.now() + timedelta(days=1), statuses=[OutboxStatus.SENT]) == 1

    assert not DeliveryEvent.objects.exists()
    suppression = Suppression.objects.get()
    assert (suppression.event, suppression.detail, suppression.lifted_at) == (None, "550 5.1.1", None)


def test_the_suppression_list_speaks_portuguese_and_filters_active_and_lifted(client):
    active = suppress("carla@example.com")
    lifted = suppress("bruno@example.com", SuppressionReason.COMPLAINT)
    suppression_lift(suppression_ids=[lifted.pk], user_id=None)
    client.force_login(make_staff("leitora", "outbox_worker.view_suppression"))

    page = client.get(SUPPRESSIONS, HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")
    only_lifted = client.get(SUPPRESSIONS, {"active": "no"})

    html = page.content.decode()
    assert "Por situação" in html and "Criada em" in html and "retirada em " in html
    assert [s.address for s in only_lifted.context["cl"].result_list] == [lifted.address]
    assert [s.address for s in client.get(SUPPRESSIONS, {"active": "yes"}).context["cl"].result_list] == [
        active.address
    ]


@pytest.mark.parametrize(
    ("reason", "meaning"),
    [
        (SuppressionReason.HARD_BOUNCE, "Não enviado: um email anterior para este endereço voltou em definitivo"),
        (SuppressionReason.COMPLAINT, "Não enviado: o destinatário marcou um email anterior como spam"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_a_held_message_is_explained_by_its_suppression_reason_not_by_the_bounce_text(
    reason, meaning, make_worker, smtp_server
):
    suppress("carla@example.com", reason)  # its detail says 5.1.1, which alone would read "the address does not exist"
    [message] = enqueue_messages(1, to=["carla@example.com"])
    make_worker().run()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SUPPRESSED

    with translation.override("pt-br"):
        explained = explain(message.last_error)
        assert str(explained.meaning).startswith(meaning)
        assert str(explained.action).startswith("Se o endereço está certo")
    assert suppressed_reason(message.last_error) == reason
    assert suppressed_reason("SMTPRecipientsRefused: {'carla@example.com': (550, b'5.1.1 unknown')}") is None
