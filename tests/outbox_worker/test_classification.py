"""Who a failure is about, learned from real servers: aiosmtpd (STARTTLS, AUTH, scripted replies) and a fake HTTP API.

Each row makes a real server misbehave one way, sends through the real client
(Django's SMTP backend, or anymail's Postmark backend), and checks both what
the client raised and what classify() makes of it. No database needed.
"""

import json
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import requests
from aiosmtpd.smtp import AuthResult
from anymail.exceptions import AnymailRecipientsRefused, AnymailRequestsAPIError
from django.core.mail import BadHeaderError, EmailMessage, get_connection
from django.core.mail.backends.smtp import EmailBackend

from outbox_worker.errors import Blame, MessageCannotBeBuilt, classify
from tests.smtp import Certificates, RecordingHandler, SMTPServer, make_certificates

PROVIDER = (Blame.PROVIDER, True)
FOR_NOW = (Blame.MESSAGE, True)
FOR_GOOD = (Blame.MESSAGE, False)


@pytest.fixture(scope="module")
def certificates() -> Certificates:
    return make_certificates()


def refuse_every_login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    return AuthResult(success=False, handled=False)


@dataclass(frozen=True)
class SmtpCase:
    raised: type[BaseException]
    verdict: tuple[Blame, bool]
    code: int | None = None
    server: Callable[[Certificates], dict] = lambda certificates: {}
    client: dict = field(default_factory=dict)
    script: Callable[[RecordingHandler], None] = lambda handler: None
    email: dict = field(default_factory=dict)


SMTP_CASES = {
    # --- about us or the provider -------------------------------------------
    "starttls, certificate from a CA we do not trust": SmtpCase(
        ssl.SSLCertVerificationError, PROVIDER,
        server=lambda certificates: {"tls_context": certificates.self_signed}, client={"use_tls": True},
    ),
    "starttls, expired certificate": SmtpCase(
        ssl.SSLCertVerificationError, PROVIDER,
        server=lambda certificates: {"tls_context": certificates.expired}, client={"use_tls": True},
    ),
    "we ask for TLS, the server has no STARTTLS": SmtpCase(
        smtplib.SMTPNotSupportedError, PROVIDER, client={"use_tls": True},
    ),
    "we log in, the server offers no AUTH": SmtpCase(
        smtplib.SMTPNotSupportedError, PROVIDER, client={"username": "outbox", "password": "secret"},
    ),
    "535 credentials refused": SmtpCase(
        smtplib.SMTPAuthenticationError, PROVIDER, 535,
        server=lambda certificates: {"authenticator": refuse_every_login, "auth_require_tls": False},
        client={"username": "outbox", "password": "wrong"},
    ),
    "553 at MAIL FROM, our sender refused": SmtpCase(
        smtplib.SMTPSenderRefused, PROVIDER, 553,
        script=lambda handler: handler.mail_replies.append("553 5.7.1 sender address rejected"),
    ),
    "421 at MAIL FROM": SmtpCase(
        smtplib.SMTPSenderRefused, PROVIDER, 421,
        script=lambda handler: handler.mail_replies.append("421 4.7.0 too many connections, closing"),
    ),
    "421 after DATA": SmtpCase(
        smtplib.SMTPDataError, PROVIDER, 421,
        script=lambda handler: handler.replies.append("421 4.3.2 shutting down"),
    ),
    "connection dropped at MAIL FROM": SmtpCase(
        smtplib.SMTPServerDisconnected, PROVIDER,
        script=lambda handler: setattr(handler, "drops_at_mail", 1),
    ),
    # --- about this message, for now -----------------------------------------
    "451 at RCPT (greylisting)": SmtpCase(
        smtplib.SMTPRecipientsRefused, FOR_NOW, 451,
        script=lambda handler: handler.rcpt_replies.update({"aluno@example.com": "451 4.7.1 greylisted"}),
    ),
    "452 at RCPT (mailbox full)": SmtpCase(
        smtplib.SMTPRecipientsRefused, FOR_NOW, 452,
        script=lambda handler: handler.rcpt_replies.update({"aluno@example.com": "452 4.2.2 mailbox full"}),
    ),
    "451 after DATA": SmtpCase(
        smtplib.SMTPDataError, FOR_NOW, 451,
        script=lambda handler: handler.replies.append("451 4.3.0 try again later"),
    ),
    # --- about this message, for good ---------------------------------------
    "550 at RCPT": SmtpCase(
        smtplib.SMTPRecipientsRefused, FOR_GOOD, 550,
        script=lambda handler: handler.rcpt_replies.update({"aluno@example.com": "550 5.1.1 no such user"}),
    ),
    "554 after DATA": SmtpCase(
        smtplib.SMTPDataError, FOR_GOOD, 554,
        script=lambda handler: handler.replies.append("554 5.7.1 message content rejected"),
    ),
    "552 at MAIL FROM, the message is larger than the server takes": SmtpCase(
        smtplib.SMTPSenderRefused, FOR_GOOD, 552, server=lambda certificates: {"data_size_limit": 100},
    ),
    "a subject with a line break cannot be built": SmtpCase(
        BadHeaderError, FOR_GOOD, email={"subject": "Matrícula\nBcc: todos@example.com"},
    ),
    "a recipient domain IDNA cannot encode": SmtpCase(
        UnicodeError, FOR_GOOD, email={"to": ["aluno@" + "á" * 64 + ".com.br"]},
    ),
}  # fmt: skip


def send(backend, **overrides: object) -> None:
    fields = {"subject": "Matrícula confirmada", "body": "Olá", "from_email": "nao-responda@example.com"}
    fields["to"] = ["aluno@example.com"]
    fields.update(overrides)
    backend.send_messages([EmailMessage(**fields)])


def send_and_catch(backend, **overrides: object) -> BaseException:
    try:
        send(backend, **overrides)
    except Exception as exc:  # noqa: BLE001 - the exception is what the test looks at
        return exc
    finally:
        backend.close()
    raise AssertionError("the send succeeded")


@pytest.mark.parametrize("case", SMTP_CASES.values(), ids=SMTP_CASES.keys())
def test_smtp_failures_are_classified_by_who_they_are_about(case: SmtpCase, certificates: Certificates):
    server = SMTPServer(**case.server(certificates)).start()
    case.script(server.handler)
    try:
        backend = EmailBackend(host="127.0.0.1", port=server.port, timeout=5, **case.client)
        backend.ssl_context = certificates.client_context()
        exc = send_and_catch(backend, **case.email)
    finally:
        server.stop()

    assert isinstance(exc, case.raised), repr(exc)
    verdict = classify(exc)
    assert ((verdict.blame, verdict.transient), verdict.smtp_code) == (case.verdict, case.code)
    assert verdict.description.startswith(type(exc).__name__)
    assert server.handler.received == []


def test_the_same_client_sends_over_starttls_to_a_certificate_it_trusts(certificates: Certificates):
    # The control for the certificate rows above: they fail for the certificate, not the set-up.
    server = SMTPServer(tls_context=certificates.valid).start()
    try:
        backend = EmailBackend(host="127.0.0.1", port=server.port, timeout=5, use_tls=True)
        backend.ssl_context = certificates.client_context()
        send(backend)
        backend.close()
        [received] = server.handler.wait_for(1)
    finally:
        server.stop()
    assert received.rcpt_tos == ["aluno@example.com"]


def test_a_refused_connection_is_about_the_provider():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]

    exc = send_and_catch(EmailBackend(host="127.0.0.1", port=closed_port, timeout=5))

    assert isinstance(exc, ConnectionRefusedError)
    assert classify(exc).blame == Blame.PROVIDER


def test_a_server_that_never_answers_is_about_the_provider(silent_server):
    exc = send_and_catch(EmailBackend(host="127.0.0.1", port=silent_server.port, timeout=0.3))

    # smtplib turns the timeout waiting for the greeting into a disconnection.
    assert isinstance(exc, smtplib.SMTPServerDisconnected)
    assert "timed out" in str(exc)
    assert classify(exc).blame == Blame.PROVIDER


def test_a_message_that_fails_verification_is_about_the_message_for_good():
    verdict = classify(MessageCannotBeBuilt("header From carries a control character"))
    assert (verdict.blame, verdict.transient) == FOR_GOOD


def test_an_error_nobody_named_spends_an_attempt_instead_of_pausing_delivery():
    verdict = classify(KeyError("body_html"))
    assert (verdict.blame, verdict.transient) == FOR_NOW


# --- An HTTP email API (anymail's Postmark backend against tests/fake_email_api.py) ---


API_CASES = {
    "401 bad server token": (401, {"ErrorCode": 10, "Message": "Bad or missing Server API token"}, PROVIDER),
    "403 account suspended": (403, {"ErrorCode": 412, "Message": "Account is pending approval"}, PROVIDER),
    "429 rate limited": (429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}, PROVIDER),
    "503 maintenance": (503, {"ErrorCode": 100, "Message": "Maintenance"}, PROVIDER),
    "422 request the API will never accept": (422, {"ErrorCode": 300, "Message": "Invalid 'Subject'"}, FOR_GOOD),
    # Postmark's answer to an unverified sender: a 422 like any invalid request,
    # but about our account. It must pause delivery, not fail every message.
    "422 sender signature not confirmed": (
        422,
        {"ErrorCode": 401, "Message": "The 'From' address you supplied is not a Sender Signature"},
        PROVIDER,
    ),
    "422 sender signature not found": (422, {"ErrorCode": 400, "Message": "Sender signature not found"}, PROVIDER),
    "422 account may not send": (422, {"ErrorCode": 405, "Message": "Not allowed to send"}, PROVIDER),
}


@pytest.mark.parametrize(("status", "reply", "verdict"), API_CASES.values(), ids=API_CASES.keys())
def test_http_api_failures_are_classified_by_status(email_api, status, reply, verdict):
    email_api.replies.append((status, reply))

    exc = send_and_catch(get_connection())

    assert isinstance(exc, AnymailRequestsAPIError)
    classified = classify(exc)
    assert ((classified.blame, classified.transient), classified.http_status) == (verdict, status)


def test_an_http_api_refusing_every_recipient_is_about_the_message_for_good(email_api):
    inactive = "Found inactive addresses: aluno@example.com. Inactive recipients are ones that have bounced."
    email_api.replies.append((422, {"ErrorCode": 406, "Message": inactive}))

    exc = send_and_catch(get_connection())

    assert isinstance(exc, AnymailRecipientsRefused)
    assert (classify(exc).blame, classify(exc).transient) == FOR_GOOD


def test_an_unreachable_http_api_is_about_the_provider(email_api, settings):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]
    settings.ANYMAIL = {**settings.ANYMAIL, "POSTMARK_API_URL": f"http://127.0.0.1:{closed_port}/"}

    exc = send_and_catch(get_connection())

    assert isinstance(exc, AnymailRequestsAPIError)
    assert exc.status_code is None
    assert classify(exc).blame == Blame.PROVIDER


def test_an_unverified_sender_on_an_http_api_may_turn_out_to_be_about_one_message(email_api):
    # Like a 553 at MAIL FROM: the provider gate charges it to the message only
    # if other messages (with another sender) go through meanwhile.
    email_api.replies.append((422, {"ErrorCode": 401, "Message": "Sender signature not confirmed"}))

    verdict = classify(send_and_catch(get_connection()))

    assert (verdict.blame, verdict.may_be_about_this_message) == (Blame.PROVIDER, True)


@pytest.mark.parametrize(
    ("body", "blame"),
    [
        ({"statusCode": 422, "name": "invalid_from_address", "message": "Invalid `from` field."}, Blame.PROVIDER),
        ({"statusCode": 403, "name": "restricted_api_key", "message": "This API key can only read"}, Blame.PROVIDER),
        ({"statusCode": 422, "name": "daily_quota_exceeded", "message": "quota"}, Blame.PROVIDER),
        ({"statusCode": 422, "name": "validation_error", "message": "Invalid `to` field."}, Blame.MESSAGE),
    ],
)
def test_resend_error_names_say_whether_it_refuses_us_or_the_message(body, blame):
    # Resend's error body (its API reference): {"statusCode", "name", "message"}.
    response = requests.Response()
    response.status_code = body["statusCode"]
    response._content = json.dumps(body).encode()
    exc = AnymailRequestsAPIError("Resend API error", status_code=response.status_code, response=response)

    assert classify(exc).blame == blame
