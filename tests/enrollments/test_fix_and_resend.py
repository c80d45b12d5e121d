"""Fix the typo and resend, in one step: from a bounced confirmation to one delivered to the corrected address."""

import base64
import json

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.urls import reverse

from backend.enrollments.admin import enrollment_fix_email_url
from backend.enrollments.models import Enrollment
from backend.enrollments.services import enrollment_create
from outbox_worker.models import DeliveryStatus, OutboxMessage, OutboxStatus, Suppression
from outbox_worker.worker import OutboxWorker
from tests.factories import make_product
from tests.staff import make_operator, make_staff

pytestmark = pytest.mark.django_db(transaction=True)

WEBHOOK_AUTH = "hooks:s3cret-hook"


def fix_url(enrollment: Enrollment) -> str:
    return reverse("admin:enrollments_enrollment_fix_email", args=[enrollment.pk])


def postmark_hard_bounce(message: OutboxMessage, email: str) -> dict:
    # Postmark's documented Bounce webhook; our outbox id comes back in Metadata.
    return {
        "RecordType": "Bounce",
        "ID": 5150,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "",
        "MessageID": "pm-typo-1",
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 <carla@gmial.com>: Recipient address rejected: User unknown",
        "Email": email,
        "From": "nao-responda@localhost",
        "BouncedAt": "2026-12-02T06:41:00Z",
        "DumpAvailable": False,
        "Inactive": True,
        "CanActivate": True,
        "Subject": message.subject,
        "Metadata": {"outbox_id": str(message.pk)},
    }


@pytest.fixture
def make_worker(smtp_backend_factory):
    """An in-process worker that delivers what is due to the test SMTP server, then returns."""
    return lambda: OutboxWorker(connection_factory=smtp_backend_factory, once=True, poll_interval=0)


@pytest.fixture
def enrollment() -> Enrollment:
    return enrollment_create(product=make_product(name="Excel Avançado"), name="Carla Dias", email="carla@gmial.com")


def test_a_bounced_confirmation_is_fixed_and_the_new_one_delivered(client, enrollment, make_worker, smtp_server,
                                                                     settings):  # fmt: skip
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": WEBHOOK_AUTH}
    make_worker().run()
    old = OutboxMessage.objects.get()
    assert old.status == OutboxStatus.SENT
    # The provider reports the typo'd address as a hard bounce.
    response = client.post(
        "/webhooks/anymail/postmark/tracking/",
        data=json.dumps(postmark_hard_bounce(old, "carla@gmial.com")),
        content_type="application/json",
        headers={"Authorization": "Basic " + base64.b64encode(WEBHOOK_AUTH.encode()).decode()},
    )
    assert response.status_code == 200
    client.force_login(make_operator())
    page = client.get(reverse("admin:enrollments_enrollment_change", args=[enrollment.pk]))
    assert fix_url(enrollment).encode() in page.content
    assert "devolvido" in page.content.decode()

    response = client.post(fix_url(enrollment), {"email": "  Carla@GMAIL.com "}, follow=True)

    assert response.status_code == 200
    enrollment.refresh_from_db()
    assert enrollment.email == "carla@gmail.com"
    old.refresh_from_db()
    new = OutboxMessage.objects.exclude(pk=old.pk).get()
    assert (new.to, new.status, new.source) == (["carla@gmail.com"], OutboxStatus.PENDING, enrollment.outbox_source)
    assert old.delivery_status == DeliveryStatus.BOUNCED and old.delivery_events.count() == 1
    assert Suppression.objects.active().get().address == "carla@gmial.com"
    make_worker().run()
    new.refresh_from_db()
    assert new.status == OutboxStatus.SENT
    assert [r.rcpt_tos for r in smtp_server.handler.received] == [["carla@gmial.com"], ["carla@gmail.com"]]
    assert "Carla Dias" in smtp_server.handler.received[1].message.get_payload()[0].get_payload(decode=True).decode()
    history = LogEntry.objects.order_by("pk")
    assert [(e.action_flag, e.object_id) for e in history] == [(CHANGE, str(enrollment.pk)), (ADDITION, str(new.pk))]
    assert "carla@gmial.com para carla@gmail.com" in history[0].change_message


def test_an_invalid_address_is_refused_with_the_apis_message_and_nothing_changes(client, enrollment):
    client.force_login(make_operator())

    response = client.post(fix_url(enrollment), {"email": "carla@exa\u2028mple.com"})

    assert response.status_code == 200
    assert response.context["form"].errors["email"]
    enrollment.refresh_from_db()
    assert enrollment.email == "carla@gmial.com"
    assert OutboxMessage.objects.count() == 1


def test_an_address_already_enrolled_in_the_product_is_refused(client, enrollment):
    enrollment_create(product=enrollment.product, name="Carla Dias", email="carla@gmail.com")
    client.force_login(make_operator())

    response = client.post(fix_url(enrollment), {"email": "carla@gmail.com"})

    assert "já tem outra matrícula" in response.content.decode()
    enrollment.refresh_from_db()
    assert enrollment.email == "carla@gmial.com"
    assert OutboxMessage.objects.count() == 2  # the two confirmations, no third


@pytest.mark.parametrize(
    "perms",
    [
        ("enrollments.view_enrollment", "enrollments.change_enrollment"),  # no resend permission
        ("enrollments.view_enrollment", "outbox_worker.resend_outboxmessage"),  # no change permission
    ],
)
def test_both_permissions_are_needed(client, enrollment, perms):
    client.force_login(make_staff("parcial", *perms))

    page = client.get(reverse("admin:enrollments_enrollment_change", args=[enrollment.pk]))
    response = client.post(fix_url(enrollment), {"email": "carla@gmail.com"})

    assert fix_url(enrollment).encode() not in page.content
    assert response.status_code == 403
    enrollment.refresh_from_db()
    assert enrollment.email == "carla@gmial.com"


def test_the_fix_url_is_offered_for_an_enrollment_source_only(enrollment):
    assert enrollment_fix_email_url(enrollment.outbox_source) == fix_url(enrollment)
    assert enrollment_fix_email_url("products.product:3") is None
    assert enrollment_fix_email_url("enrollments.enrollment:x") is None
