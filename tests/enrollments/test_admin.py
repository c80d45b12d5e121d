import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.urls import reverse

from backend.enrollments.models import Enrollment
from backend.enrollments.services import enrollment_create
from outbox_worker.models import OutboxMessage, OutboxStatus
from tests.factories import make_product
from tests.staff import make_operator, make_staff

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:enrollments_enrollment_changelist")


@pytest.fixture
def enrollment() -> Enrollment:
    return enrollment_create(product=make_product(name="Excel Avançado"), name="Ana Souza", email="ana@example.com")


def _resend(client, enrollment: Enrollment, *, confirm: bool = True):
    data = {"action": "resend_confirmation", "_selected_action": [enrollment.pk]}
    if confirm:
        data["post"] = "yes"
    return client.post(CHANGELIST, data, follow=True)


def test_enrollment_page_lists_its_emails_with_status_and_links(client, enrollment):
    client.force_login(make_operator())
    message = OutboxMessage.objects.get()
    OutboxMessage.objects.filter(pk=message.pk).update(status=OutboxStatus.FAILED, last_error="550 no such user")

    html = client.get(reverse("admin:enrollments_enrollment_change", args=[enrollment.pk])).content.decode()

    assert reverse("admin:outbox_worker_outboxmessage_change", args=[message.pk]) in html
    assert "Matrícula confirmada: Excel Avançado" in html
    assert "falhou" in html and "550 no such user" in html
    assert "detail-action-resend_confirmation" in html


def test_enrollment_list_shows_the_confirmation_status(client, enrollment):
    client.force_login(make_operator())
    OutboxMessage.objects.update(status=OutboxStatus.SENT)

    response = client.get(CHANGELIST)

    assert response.context["cl"].result_list[0].email_status == "sent"
    assert "enviado" in response.content.decode()


def test_resend_confirmation_asks_first_then_queues_a_new_message_from_current_templates(client, enrollment):
    client.force_login(make_operator())
    original = OutboxMessage.objects.get()
    OutboxMessage.objects.filter(pk=original.pk).update(status=OutboxStatus.SENT, subject="texto antigo")

    preview = _resend(client, enrollment, confirm=False)
    assert OutboxMessage.objects.count() == 1
    assert "uma confirmação nova para ana@example.com" in preview.content.decode()

    _resend(client, enrollment)

    original.refresh_from_db()
    new = OutboxMessage.objects.exclude(pk=original.pk).get()
    assert (original.status, original.subject) == (OutboxStatus.SENT, "texto antigo")
    assert (new.status, new.to, new.source) == (OutboxStatus.PENDING, ["ana@example.com"], enrollment.outbox_source)
    assert new.subject == "Matrícula confirmada: Excel Avançado"
    assert new.message_id != original.message_id
    logged = set(LogEntry.objects.values_list("user__username", "object_id", "action_flag", "change_message"))
    assert logged == {
        ("operadora", str(enrollment.pk), CHANGE, f"Confirmação reenviada: mensagem #{new.pk}"),
        ("operadora", str(new.pk), ADDITION, f"Confirmação da matrícula #{enrollment.pk}"),
    }


def test_staff_without_the_resend_permission_cannot_resend_the_confirmation(client, enrollment):
    client.force_login(make_staff("atendente", "enrollments.view_enrollment", "enrollments.change_enrollment"))

    page = client.get(reverse("admin:enrollments_enrollment_change", args=[enrollment.pk]))
    _resend(client, enrollment)

    assert b"detail-action-resend_confirmation" not in page.content
    assert OutboxMessage.objects.count() == 1
    assert not LogEntry.objects.exists()


def test_fixing_a_typo_in_the_email_normalises_it_like_the_api(client, enrollment):
    client.force_login(make_operator())

    client.post(
        reverse("admin:enrollments_enrollment_change", args=[enrollment.pk]),
        {"name": "Ana Souza", "email": "  Ana.Souza@Example.com ", "phone": "", "status": "confirmed"},
    )

    enrollment.refresh_from_db()
    assert enrollment.email == "ana.souza@example.com"
