"""Handing one email to the email backend, without redoing per message what is the same for every one.

Django's SMTP backend parses the sender address (`sanitize_address`, a full
RFC 5322 parse) for every message, yet a deployment sends from one or two
addresses: on a fast provider that parse was an eighth of the worker's CPU
per email. For exactly Django's SMTP backend, the send below is its
`send_messages()` for one message, the sender's envelope form cached and a
plain recipient address (`mime.is_plain_address`, which sanitize_address
gives back unchanged) not parsed at all. The bytes sent are a
`wire.WireEmail`'s own, or the email's `message().as_bytes()`: for a
`mime.VerifiedEmail`, the bytes that were checked. Any other backend
(anymail, a subclass, one whose `send_messages` was replaced) gets
`send_messages()` as it is, and only ever an EmailMessage.
"""

import smtplib
from collections.abc import Callable

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend

from .mime import envelope_address, is_plain_address
from .wire import WireEmail


def is_plain_smtp(connection: BaseEmailBackend) -> bool:
    """Exactly Django's SMTP backend, its send_messages() not replaced (by a subclass or on the instance)."""
    return getattr(connection.send_messages, "__func__", None) is SMTPBackend.send_messages and (
        type(connection) is SMTPBackend
    )


def send_email(connection: BaseEmailBackend, email: EmailMessage | WireEmail) -> bool:
    """Send `email` over the already opened `connection`; return whether the backend took it.

    A WireEmail is only for exactly Django's SMTP backend (`is_plain_smtp`).
    """
    if isinstance(email, WireEmail):
        if not is_plain_smtp(connection):
            raise TypeError(f"a WireEmail is sent by Django's SMTP backend only, not {type(connection).__name__}")
        return _smtp_send(connection, email.from_email, email.recipients, "utf-8", lambda: email.data)
    if not is_plain_smtp(connection):
        return connection.send_messages([email]) == 1
    encoding = email.encoding or settings.DEFAULT_CHARSET
    return _smtp_send(
        connection, email.from_email, email.recipients(), encoding, lambda: email.message().as_bytes(linesep="\r\n")
    )


def _smtp_send(
    connection: SMTPBackend, from_email: str, recipients: list[str], encoding: str, data: Callable[[], bytes]
) -> bool:
    # django.core.mail.backends.smtp.EmailBackend.send_messages() and _send(), Django 5.2.
    with connection._lock:
        if connection.connection is None or not recipients:
            return False
        sender = envelope_address(from_email, encoding)
        envelope = [
            address if is_plain_address(address) else envelope_address(address, encoding) for address in recipients
        ]
        try:
            connection.connection.sendmail(sender, envelope, data())
        except smtplib.SMTPException:
            if not connection.fail_silently:
                raise
            return False
    return True
