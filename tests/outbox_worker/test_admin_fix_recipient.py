"""An undelivered message's way out (the host's fix-the-address page, via the registry) and the suppressed badge."""

import pytest
from django.urls import reverse

from backend.enrollments.models import Enrollment
from backend.enrollments.services import enrollment_create
from outbox_worker import registry
from outbox_worker.admin_display import STATUS_COLOURS
from outbox_worker.models import DeliveryStatus, OutboxMessage, OutboxStatus
from tests.factories import make_product
from tests.staff import make_operator, make_staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def enrollment() -> Enrollment:
    return enrollment_create(product=make_product(name="Excel Avançado"), name="Carla Dias", email="carla@gmial.com")


def message_page(message: OutboxMessage) -> str:
    return reverse("admin:outbox_worker_outboxmessage_change", args=[message.pk])


def fix_page(enrollment: Enrollment) -> str:
    return reverse("admin:enrollments_enrollment_fix_email", args=[enrollment.pk])


@pytest.mark.parametrize(
    ("status", "delivery_status"),
    [
        (OutboxStatus.SENT, DeliveryStatus.BOUNCED),
        (OutboxStatus.SENT, DeliveryStatus.REJECTED),
        (OutboxStatus.FAILED, ""),
        (OutboxStatus.SUPPRESSED, ""),
    ],
)
def test_an_undelivered_message_offers_to_fix_its_source_address(client, enrollment, status, delivery_status):
    message = OutboxMessage.objects.get(source=enrollment.outbox_source)
    OutboxMessage.objects.filter(pk=message.pk).update(status=status, delivery_status=delivery_status)
    client.force_login(make_operator())

    page = client.get(message_page(message)).content.decode()

    assert f'href="{fix_page(enrollment)}"' in page
    assert "outbox-fix-recipient" in page


@pytest.mark.parametrize(
    ("status", "delivery_status"),
    [(OutboxStatus.PENDING, ""), (OutboxStatus.SENT, ""), (OutboxStatus.SENT, DeliveryStatus.DELIVERED)],
)
def test_a_message_on_its_way_or_delivered_offers_no_fix(client, enrollment, status, delivery_status):
    message = OutboxMessage.objects.get(source=enrollment.outbox_source)
    OutboxMessage.objects.filter(pk=message.pk).update(status=status, delivery_status=delivery_status)
    client.force_login(make_operator())

    assert "outbox-fix-recipient" not in client.get(message_page(message)).content.decode()


@pytest.mark.parametrize(
    "perms",
    [
        ("outbox_worker.view_outboxmessage", "enrollments.change_enrollment"),  # may not resend
        ("outbox_worker.view_outboxmessage", "outbox_worker.resend_outboxmessage"),  # may not change the source
    ],
)
def test_the_fix_link_needs_the_same_permissions_as_the_fix_page(client, enrollment, perms):
    message = OutboxMessage.objects.get(source=enrollment.outbox_source)
    OutboxMessage.objects.filter(pk=message.pk).update(status=OutboxStatus.FAILED)
    client.force_login(make_staff("parcial", *perms))

    page = client.get(message_page(message))

    assert page.status_code == 200
    assert "outbox-fix-recipient" not in page.content.decode()


def test_without_a_registry_no_fix_is_offered(client, enrollment, settings):
    settings.OUTBOX_REGISTRY = ""
    message = OutboxMessage.objects.get(source=enrollment.outbox_source)
    OutboxMessage.objects.filter(pk=message.pk).update(status=OutboxStatus.FAILED)
    client.force_login(make_operator())

    assert "outbox-fix-recipient" not in client.get(message_page(message)).content.decode()
    assert registry.RAW.fix_recipient_url(enrollment.outbox_source, None) is None


def test_a_source_the_host_has_no_fix_page_for_offers_none(client, settings):
    message = OutboxMessage.objects.create(
        to=["ana@example.com"], subject="Oi", body_text="oi", source="products.product:1", status=OutboxStatus.FAILED
    )
    client.force_login(make_operator())

    assert "outbox-fix-recipient" not in client.get(message_page(message)).content.decode()


def test_every_status_badge_has_a_colour_of_its_own():
    assert set(STATUS_COLOURS) == set(OutboxStatus.values)
    assert len(set(STATUS_COLOURS.values())) == len(STATUS_COLOURS)


def test_a_suppressed_message_shows_its_own_badge(client, enrollment):
    message = OutboxMessage.objects.get(source=enrollment.outbox_source)
    OutboxMessage.objects.filter(pk=message.pk).update(status=OutboxStatus.SUPPRESSED)
    client.force_login(make_operator())

    page = client.get(reverse("admin:outbox_worker_outboxmessage_changelist")).content.decode()

    assert f'outbox-status-suppressed" style="color:#fff;background:{STATUS_COLOURS[OutboxStatus.SUPPRESSED]}' in page
