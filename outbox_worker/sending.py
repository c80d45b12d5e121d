"""Handing one built email to the email backend, without redoing per message what is the same for every one.

Django's SMTP backend parses the sender address (`sanitize_address`, a full
RFC 5322 parse) for every message, yet a deployment sends from one or two
addresses: on a fast provider that parse was an eighth of the worker's CPU
per email. For exactly Django's SMTP backend, the send below is its
`send_messages()` for one message, the sender's envelope form cached. The
recipients are still parsed per message, and the bytes sent are still the
email's own `message().as_bytes()`: for a `mime.VerifiedEmail`, the bytes
that were checked. Any other backend (anymail, a subclass, one whose
`send_messages` was replaced) gets `send_messages()` as it is.
"""

import smtplib

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.core.mail.message import sanitize_address

from .mime import envelope_address


def _plain_smtp(connection: BaseEmailBackend) -> bool:
    """Exactly Django's SMTP backend, its send_messages() not replaced (by a subclass or on the instance)."""
    return getattr(connection.send_messages, "__func__", None) is SMTPBackend.send_messages and (
        type(connection) is SMTPBackend
    )


def send_email(connection: BaseEmailBackend, email: EmailMessage) -> bool:
    """Send `email` over the already opened `connection`; return whether the backend took it."""
    if not _plain_smtp(connection):
        return connection.send_messages([email]) == 1
    # django.core.mail.backends.smtp.EmailBackend.send_messages() and _send(), Django 5.2.
    with connection._lock:
        if connection.connection is None or not email.recipients():
            return False
        encoding = email.encoding or settings.DEFAULT_CHARSET
        sender = envelope_address(email.from_email, encoding)
        recipients = [sanitize_address(address, encoding) for address in email.recipients()]
        try:
            connection.connection.sendmail(sender, recipients, email.message().as_bytes(linesep="\r\n"))
        except smtplib.SMTPException:
            if not connection.fail_silently:
                raise
            return False
    return True
