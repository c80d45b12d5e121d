"""Provider delivery events through anymail's real webhook views, with payloads shaped as each provider documents.

Postmark: https://postmarkapp.com/developer/webhooks (Delivery, Bounce, SpamComplaint).
Resend: https://resend.com/docs/webhooks (email.delivered, email.bounced, email.complained), signed by Svix.
"""

import base64
import json
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.db import OperationalError
from svix.webhooks import Webhook

from outbox_worker import tracking
from outbox_worker.models import DeliveryEvent, DeliveryStatus, OutboxMessage, OutboxStatus, Suppression
from tests.factories import enqueue_messages
from tests.staff import make_operator

pytestmark = pytest.mark.django_db

BASIC_AUTH = "hooks:s3cret-hook"
RESEND_SECRET = "whsec_" + base64.b64encode(b"resend-test-signing-secret").decode()
POSTMARK_URL = "/webhooks/anymail/postmark/tracking/"
RESEND_URL = "/webhooks/anymail/resend/tracking/"


@pytest.fixture(autouse=True)
def _webhook_secrets(settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": BASIC_AUTH, "RESEND_SIGNING_SECRET": RESEND_SECRET}


def auth_header(credentials: str = BASIC_AUTH) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def post_postmark(client, payload: dict, credentials: str = BASIC_AUTH):
    return client.post(POSTMARK_URL, data=json.dumps(payload), content_type="application/json",
                       headers=auth_header(credentials))  # fmt: skip


def post_resend(client, payload: dict, *, svix_id: str, secret: str = RESEND_SECRET, credentials: str = BASIC_AUTH):
    body = json.dumps(payload)
    timestamp = datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id=svix_id, timestamp=timestamp, data=body)
    headers = {
        **auth_header(credentials),
        "svix-id": svix_id,
        "svix-timestamp": str(int(timestamp.timestamp())),
        "svix-signature": signature,
    }
    return client.post(RESEND_URL, data=body.encode(), content_type="application/json", headers=headers)


def sent_message(provider_id: str, to: str = "carla@example.com") -> OutboxMessage:
    [message] = enqueue_messages(1, to=[to])
    OutboxMessage.objects.filter(pk=message.pk).update(status=OutboxStatus.SENT, provider_message_id=provider_id)
    return message


# --- Postmark's documented payloads ------------------------------------------


def postmark_delivery(message_id: str, recipient: str, metadata: dict | None = None) -> dict:
    return {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": message_id,
        "Recipient": recipient,
        "Tag": "",
        "DeliveredAt": "2026-12-02T06:40:12Z",
        "Details": "smtp;250 2.0.0 OK 1733121612 - gsmtp",
        "Metadata": metadata or {},
    }


def postmark_bounce(message_id: str, email: str, *, bounce_type: str, type_code: int, bounce_id: int) -> dict:
    return {
        "RecordType": "Bounce",
        "ID": bounce_id,
        "Type": bounce_type,
        "TypeCode": type_code,
        "Name": "Hard bounce" if bounce_type == "HardBounce" else "Soft bounce",
        "Tag": "",
        "MessageID": message_id,
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email,
        "From": "nao-responda@cursos.example",
        "BouncedAt": "2026-12-02T06:41:00Z",
        "DumpAvailable": True,
        "Inactive": bounce_type == "HardBounce",
        "CanActivate": True,
        "Subject": "Matrícula confirmada",
        "Metadata": {},
    }


def postmark_spam_complaint(message_id: str, email: str, complaint_id: int) -> dict:
    return {
        "RecordType": "SpamComplaint",
        "ID": complaint_id,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Tag": "",
        "MessageID": message_id,
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The subscriber explicitly marked this message as spam.",
        "Details": "Test spam complaint details",
        "Email": email,
        "From": "nao-responda@cursos.example",
        "BouncedAt": "2026-12-02T07:00:00Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": False,
        "Subject": "Matrícula confirmada",
        "Metadata": {},
    }


def test_postmark_delivery_marks_the_message_delivered(client):
    message = sent_message("pm-aaa-1")

    response = post_postmark(client, postmark_delivery("pm-aaa-1", "carla@example.com"))

    assert response.status_code == 200
    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.DELIVERED
    assert message.delivery_label() == "entregue"
    [event] = message.delivery_events.all()
    assert (event.provider, event.event_type) == ("postmark", "delivered")
    assert event.mta_response.startswith("smtp;250")


def test_postmark_hard_bounce_marks_bounced_and_suppresses_the_address(client):
    message = sent_message("pm-aaa-2", to="Carla@Example.com")

    response = post_postmark(
        client, postmark_bounce("pm-aaa-2", "Carla@Example.com", bounce_type="HardBounce", type_code=1, bounce_id=4242)
    )

    assert response.status_code == 200
    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.BOUNCED
    [suppression] = Suppression.objects.active()
    assert suppression.address == "carla@example.com"
    assert suppression.reason == "hard_bounce"
    assert "5.1.1" in suppression.detail


def test_postmark_soft_bounce_is_recorded_without_suppressing(client):
    message = sent_message("pm-aaa-3")

    post_postmark(client, postmark_bounce("pm-aaa-3", "carla@example.com", bounce_type="SoftBounce",
                                          type_code=4096, bounce_id=4243))  # fmt: skip

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.SOFT_BOUNCED
    assert not Suppression.objects.exists()


def test_postmark_spam_complaint_marks_spam_and_suppresses(client):
    message = sent_message("pm-aaa-4")
    post_postmark(client, postmark_delivery("pm-aaa-4", "carla@example.com"))

    post_postmark(client, postmark_spam_complaint("pm-aaa-4", "carla@example.com", complaint_id=777))

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.COMPLAINED
    assert message.delivery_label() == "marcado como spam"
    assert Suppression.objects.active().get().reason == "complaint"


def test_a_late_delivery_does_not_undo_a_bounce(client):
    # Events arrive out of order: a "delivered" after the bounce must not hide it.
    message = sent_message("pm-aaa-5")
    post_postmark(client, postmark_bounce("pm-aaa-5", "carla@example.com", bounce_type="HardBounce",
                                          type_code=1, bounce_id=4244))  # fmt: skip

    post_postmark(client, postmark_delivery("pm-aaa-5", "carla@example.com"))

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.BOUNCED
    assert message.delivery_events.count() == 2


@pytest.mark.parametrize("payload_factory", ["bounce", "delivery"])
def test_a_postmark_replay_is_stored_once(client, payload_factory):
    # Bounces carry Postmark's ID; deliveries have none and are keyed by what identifies them.
    sent_message("pm-aaa-6")
    if payload_factory == "bounce":
        payload = postmark_bounce("pm-aaa-6", "carla@example.com", bounce_type="HardBounce", type_code=1, bounce_id=9)
    else:
        payload = postmark_delivery("pm-aaa-6", "carla@example.com")

    first, second = post_postmark(client, payload), post_postmark(client, payload)

    assert (first.status_code, second.status_code) == (200, 200)
    assert DeliveryEvent.objects.count() == 1
    assert Suppression.objects.count() == (1 if payload_factory == "bounce" else 0)


def test_an_event_for_an_unknown_message_is_stored_unlinked(client):
    response = post_postmark(client, postmark_delivery("pm-not-ours", "someone@example.com"))

    assert response.status_code == 200
    event = DeliveryEvent.objects.get()
    assert event.message is None
    assert event.provider_message_id == "pm-not-ours"


def test_an_event_finds_its_message_by_our_metadata_before_the_provider_id_is_written(client):
    # The webhook can beat the worker's write of the provider id: the outbox id echoed in metadata links it.
    [message] = enqueue_messages(1, to=["carla@example.com"])

    post_postmark(client, postmark_delivery("pm-early", "carla@example.com", {"outbox_id": str(message.pk)}))

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.DELIVERED
    assert message.delivery_events.get().provider_message_id == "pm-early"


@pytest.mark.parametrize("credentials", ["hooks:wrong", "someone:s3cret-hook"])
def test_postmark_with_a_wrong_secret_is_refused_and_nothing_is_stored(client, credentials):
    message = sent_message("pm-aaa-7")

    response = post_postmark(client, postmark_delivery("pm-aaa-7", "carla@example.com"), credentials=credentials)

    # anymail answers a failed authentication with 400 (Django's SuspiciousOperation).
    assert response.status_code == 400
    assert not DeliveryEvent.objects.exists()
    message.refresh_from_db()
    assert message.delivery_status == ""


def test_webhooks_are_refused_while_no_secret_is_configured(client, settings):
    # backend.settings sets an unguessable secret when ANYMAIL_WEBHOOK_SECRET is missing.
    from backend.settings import ANYMAIL

    settings.ANYMAIL = {"WEBHOOK_SECRET": ANYMAIL["WEBHOOK_SECRET"]} if "unset:" in ANYMAIL["WEBHOOK_SECRET"] else {}
    assert settings.ANYMAIL, "the test settings must not configure a webhook secret"

    response = post_postmark(client, postmark_delivery("pm-x", "a@example.com"), credentials="anyone:anything")

    assert response.status_code == 400
    assert not DeliveryEvent.objects.exists()


# --- Resend's documented payloads (signed with Svix) --------------------------


def resend_event(event_type: str, email_id: str, to: str, *, bounce: dict | None = None) -> dict:
    data = {
        "created_at": "2026-12-02T06:40:00.000Z",
        "email_id": email_id,
        "from": "Cursos <nao-responda@cursos.example>",
        "subject": "Matrícula confirmada",
        "to": [to],
    }
    if bounce:
        data["bounce"] = bounce
    return {"type": event_type, "created_at": "2026-12-02T06:40:05.123Z", "data": data}


RESEND_HARD_BOUNCE = {
    "message": "The recipient's email provider sent a hard bounce message, but didn't specify the reason.",
    "subType": "General",
    "type": "Permanent",
}
RESEND_SOFT_BOUNCE = {
    "message": "The recipient's email provider sent a bounce message because the recipient's inbox was full.",
    "subType": "MailboxFull",
    "type": "Transient",
}


def test_resend_delivered(client):
    message = sent_message("re-1")

    response = post_resend(client, resend_event("email.delivered", "re-1", "carla@example.com"), svix_id="msg_d1")

    assert response.status_code == 200
    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.DELIVERED
    assert message.delivery_events.get().event_id == "msg_d1"


def test_resend_hard_bounce_suppresses(client):
    message = sent_message("re-2")

    post_resend(client, resend_event("email.bounced", "re-2", "carla@example.com", bounce=RESEND_HARD_BOUNCE),
                svix_id="msg_b1")  # fmt: skip

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.BOUNCED
    assert Suppression.objects.active().get().address == "carla@example.com"


def test_resend_soft_bounce_does_not_suppress(client):
    message = sent_message("re-3")

    post_resend(client, resend_event("email.bounced", "re-3", "carla@example.com", bounce=RESEND_SOFT_BOUNCE),
                svix_id="msg_b2")  # fmt: skip

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.SOFT_BOUNCED
    assert not Suppression.objects.exists()


def test_resend_complaint_suppresses(client):
    message = sent_message("re-4")

    post_resend(client, resend_event("email.complained", "re-4", "carla@example.com"), svix_id="msg_c1")

    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.COMPLAINED
    assert Suppression.objects.active().get().reason == "complaint"


def test_resend_replay_is_stored_once(client):
    sent_message("re-5")
    payload = resend_event("email.bounced", "re-5", "carla@example.com", bounce=RESEND_HARD_BOUNCE)

    # Svix keeps the svix-id across redeliveries (the signature and timestamp change).
    responses = [post_resend(client, payload, svix_id="msg_r1") for _ in range(2)]

    assert [r.status_code for r in responses] == [200, 200]
    assert DeliveryEvent.objects.count() == 1
    assert Suppression.objects.count() == 1


def test_resend_with_a_bad_signature_is_refused(client):
    message = sent_message("re-6")
    wrong = "whsec_" + base64.b64encode(b"not-the-secret").decode()

    response = post_resend(client, resend_event("email.delivered", "re-6", "carla@example.com"),
                           svix_id="msg_x", secret=wrong)  # fmt: skip

    assert response.status_code == 400
    assert not DeliveryEvent.objects.exists()
    message.refresh_from_db()
    assert message.delivery_status == ""


def test_resend_with_a_good_signature_but_no_basic_auth_is_refused(client):
    response = post_resend(client, resend_event("email.delivered", "re-7", "c@example.com"), svix_id="msg_y",
                           credentials="hooks:wrong")  # fmt: skip

    assert response.status_code == 400
    assert not DeliveryEvent.objects.exists()


# --- the provider id written at send time -------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_worker_stores_the_providers_message_id_and_the_event_finds_it(client, email_api, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": BASIC_AUTH}
    [message] = enqueue_messages(1, to=["carla@example.com"])

    call_command("outbox_worker", "--once", verbosity=0)

    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert message.provider_message_id == "pm-1"  # the fake Postmark API's MessageID
    # Our id travels as anymail metadata, which Postmark echoes in its webhooks.
    assert email_api.requests[0].json["Metadata"] == {"outbox_id": str(message.pk)}
    post_postmark(client, postmark_delivery("pm-1", "carla@example.com"))
    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.DELIVERED


# --- what the operator sees ----------------------------------------------------


def test_the_operator_sees_the_bounce_and_its_events_on_the_message_page_and_list(client):
    message = sent_message("pm-op-1")
    post_postmark(client, postmark_delivery("pm-op-1", "carla@example.com"))
    post_postmark(client, postmark_bounce("pm-op-1", "carla@example.com", bounce_type="HardBounce", type_code=1,
                                          bounce_id=31337))  # fmt: skip
    client.force_login(make_operator())

    page = client.get(f"/admin/outbox_worker/outboxmessage/{message.pk}/change/").content.decode()
    listing = client.get("/admin/outbox_worker/outboxmessage/", {"delivery_status": "bounced"})

    assert "outbox-delivery-bounced" in page
    assert "smtp;550 5.1.1" in page and "smtp;250 2.0.0" in page  # both events, with the provider's words
    assert [m.pk for m in listing.context["cl"].result_list] == [message.pk]
    assert "outbox-delivery-bounced" in listing.content.decode()


# --- a handler failure never becomes a retry storm ------------------------------
# Mocked: no real payload makes our own code fail, and that is the point of these tests.


def test_an_unexpected_error_in_the_handler_is_logged_and_answered_200(client, monkeypatch, caplog):
    def broken(**kwargs):
        raise ValueError("a payload we cannot read")

    monkeypatch.setattr(tracking, "delivery_event_record", broken)

    response = post_postmark(client, postmark_delivery("pm-z", "carla@example.com"))

    # Retrying the same payload could never succeed: the provider is told it was received.
    assert response.status_code == 200
    assert "outbox.event_failed" in caplog.text and "a payload we cannot read" in caplog.text


def test_a_database_error_answers_500_so_the_provider_retries_later(client, monkeypatch):
    def database_down(**kwargs):
        raise OperationalError("the database is restarting")

    monkeypatch.setattr(tracking, "delivery_event_record", database_down)
    client.raise_request_exception = False

    response = post_postmark(client, postmark_delivery("pm-z", "carla@example.com"))

    # The provider retries on its own schedule; the replay is then stored once.
    assert response.status_code == 500


def test_an_absurdly_long_recipient_is_stored_without_suppressing_anything(client):
    long_address = "x" * 400 + "@example.com"
    payload = postmark_bounce("pm-long", long_address, bounce_type="HardBounce", type_code=1, bounce_id=1)

    assert post_postmark(client, payload).status_code == 200
    assert DeliveryEvent.objects.count() == 1
    assert not Suppression.objects.exists()
