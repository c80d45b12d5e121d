"""Handing a built email to the backend: Django's SMTP backend with the sender's envelope form cached."""

import pytest
from django.core.mail import EmailMessage
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

from outbox_worker.mime import build_email
from outbox_worker.sending import send_email
from tests.factories import enqueue_messages


@pytest.mark.django_db
def test_the_checked_bytes_go_out_with_the_envelope_django_would_give_them(backend, smtp_server):
    message = enqueue_messages(1, from_email="Cursos Á <nao-responda@exämple.com>")[0]
    email = build_email(message, backend)

    assert send_email(backend, email) and send_email(backend, email)  # the second from the cache

    assert len(smtp_server.handler.received) == 2
    for received in smtp_server.handler.received:
        assert received.mail_from == "nao-responda@xn--exmple-cua.com"
        assert received.rcpt_tos == message.to
        assert received.data.rstrip() == email.verified.as_bytes(linesep="\r\n").rstrip()


def test_a_sender_the_backend_refuses_is_refused_every_time(backend):
    email = EmailMessage("s", "b", "bad@\u2028example.com", ["to@example.com"])
    for _ in range(2):
        with pytest.raises(ValueError):
            send_email(backend, email)


def test_other_backends_and_replaced_send_messages_are_used_as_they_are(backend, smtp_server):
    calls = []
    backend.send_messages = lambda messages: calls.append(messages) or 1
    email = EmailMessage("s", "b", "from@example.com", ["to@example.com"])

    assert send_email(backend, email)
    assert calls == [[email]] and smtp_server.handler.received == []
    assert send_email(LocmemBackend(), email)
