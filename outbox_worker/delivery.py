"""Turning an outbox row into an email and handing it to Django's email backend."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from .errors import BackendRefused, classify
from .models import AttemptOutcome, DeliveryAttempt, OutboxMessage
from .retry import RetryPolicy

logger = logging.getLogger("outbox_worker.delivery")


def build_email(message: OutboxMessage, connection: BaseEmailBackend | None = None) -> EmailMultiAlternatives:
    """Return the Django email for an outbox row, with its fixed Message-ID."""
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.body_text,
        from_email=message.from_email,
        to=message.to,
        cc=message.cc,
        bcc=message.bcc,
        reply_to=message.reply_to,
        headers={**message.headers, "Message-ID": message.message_id},
        connection=connection,
    )
    if message.body_html:
        email.attach_alternative(message.body_html, "text/html")
    return email


@dataclass
class DeliveryResult:
    """What happened to one message: sent, or the last error and its kind."""

    sent: bool
    transient: bool = False
    error: str = ""
    attempts: list[DeliveryAttempt] = field(default_factory=list)


def close_quietly(connection: BaseEmailBackend) -> None:
    # After an error the connection may be half-dead; the next send reopens it.
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail any way it likes
        pass


def deliver(
    message: OutboxMessage,
    *,
    connection: BaseEmailBackend,
    policy: RetryPolicy,
    worker_id: str,
    sleep: Callable[[float], object],
    should_stop: Callable[[], bool],
) -> DeliveryResult:
    """Send one message, retrying transient errors in-process per `policy`."""
    result = DeliveryResult(sent=False)
    try:
        email = build_email(message, connection)
    except Exception as exc:  # noqa: BLE001 - a row we cannot build is a permanent failure
        result.error = classify(exc).description
        now = timezone.now()
        result.attempts.append(_attempt(message, worker_id, 1, now, now, AttemptOutcome.PERMANENT, None, result.error))
        return result

    try_number = 0
    try:
        for retry_state in policy.retrying(sleep=sleep, should_stop=should_stop):
            with retry_state:
                try_number += 1
                started = timezone.now()
                clock = time.monotonic()
                try:
                    # Opened here rather than by send_messages(), which would
                    # close a connection it opened itself after every message.
                    connection.open()
                    if connection.send_messages([email]) != 1:
                        raise BackendRefused("the email backend did not send the message")
                except Exception as exc:
                    close_quietly(connection)
                    verdict = classify(exc)
                    outcome = AttemptOutcome.TRANSIENT if verdict.transient else AttemptOutcome.PERMANENT
                    result.attempts.append(
                        _attempt(
                            message,
                            worker_id,
                            try_number,
                            started,
                            timezone.now(),
                            outcome,
                            verdict.smtp_code,
                            verdict.description,
                        )
                    )
                    logger.warning(
                        "outbox.try_failed id=%s attempt=%s try=%s outcome=%s code=%s duration_ms=%.1f error=%r",
                        message.pk,
                        message.attempts,
                        try_number,
                        outcome,
                        verdict.smtp_code,
                        (time.monotonic() - clock) * 1000,
                        verdict.description,
                    )
                    raise
                result.attempts.append(
                    _attempt(message, worker_id, try_number, started, timezone.now(), AttemptOutcome.SENT, None, "")
                )
        result.sent = True
    except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded outcome
        verdict = classify(exc)
        result.transient = verdict.transient
        result.error = verdict.description
    return result


def _attempt(
    message: OutboxMessage,
    worker_id: str,
    try_number: int,
    started: datetime,
    finished: datetime,
    outcome: str,
    smtp_code: int | None,
    error: str,
) -> DeliveryAttempt:
    return DeliveryAttempt(
        message_id=message.pk,
        attempt=message.attempts,
        try_number=try_number,
        worker=worker_id,
        started_at=started,
        finished_at=finished,
        outcome=outcome,
        smtp_code=smtp_code,
        error=error,
    )
