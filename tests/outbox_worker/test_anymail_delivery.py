"""The worker delivers through an HTTP email API (django-anymail), as on Railway without SMTP."""

import pytest
from django.core.management import call_command

from outbox_worker.models import AttemptOutcome, OutboxMessage, OutboxStatus
from tests.factories import enqueue_messages

pytestmark = pytest.mark.django_db(transaction=True)


def deliver_due() -> None:
    call_command("outbox_worker", "--once", verbosity=0)


def outcomes(message: OutboxMessage) -> list[str]:
    return list(message.delivery_attempts.order_by("started_at", "id").values_list("outcome", flat=True))


def test_worker_delivers_through_the_http_api(email_api):
    [message] = enqueue_messages(1, subject="Matrícula confirmada", body_html="<p>Olá</p>")

    deliver_due()

    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    [request] = email_api.requests
    assert request.path == "/email"
    assert request.headers["X-Postmark-Server-Token"] == "test-server-token"
    assert request.json["To"] == "aluno0@example.com"
    assert request.json["Subject"] == "Matrícula confirmada"
    assert request.json["HtmlBody"] == "<p>Olá</p>"
    assert {"Name": "Message-ID", "Value": message.message_id} in request.json["Headers"]


def test_a_5xx_and_a_429_are_retried_then_the_email_is_delivered(email_api):
    email_api.replies.extend(
        [(503, {"ErrorCode": 100, "Message": "Maintenance"}), (429, {"ErrorCode": 429, "Message": "Rate limit"})]
    )
    [message] = enqueue_messages(1)

    deliver_due()

    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert len(email_api.requests) == 3
    assert outcomes(message) == [AttemptOutcome.TRANSIENT, AttemptOutcome.TRANSIENT, AttemptOutcome.SENT]
    # Every try carried the same Message-ID.
    assert len({str(r.json["Headers"]) for r in email_api.requests}) == 1


@pytest.mark.parametrize(
    ("status", "reply"),
    [
        # A request the API will never accept (anymail: AnymailRequestsAPIError, status 422).
        (422, {"ErrorCode": 300, "Message": "Invalid 'From' address: 'nao-responda@localhost'."}),
        # Every recipient refused (anymail: AnymailRecipientsRefused, no status code).
        (422, {"ErrorCode": 300, "Message": "Invalid 'To' address: 'aluno0@example.com'."}),
        (422, {"ErrorCode": 406, "Message": "Found inactive addresses: aluno0@example.com. Inactive recipients x"}),
        (400, {"ErrorCode": 402, "Message": "Received invalid JSON input."}),
    ],
)
def test_a_permanent_4xx_fails_the_message_at_once(email_api, status, reply):
    email_api.replies.append((status, reply))
    [message] = enqueue_messages(1)

    deliver_due()

    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    assert message.attempts == 1
    assert len(email_api.requests) == 1
    assert outcomes(message) == [AttemptOutcome.PERMANENT]
    assert message.last_error
