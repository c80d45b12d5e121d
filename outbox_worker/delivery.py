"""Turning an outbox row into an email and handing it to Django's email backend."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from .errors import BackendRefused, Blame, Classified, classify
from .logevents import log_event
from .mime import build_email
from .models import AttemptOutcome, OutboxMessage
from .retry import RetryPolicy
from .sending import is_plain_smtp, send_email
from .transitions import Attempt
from .wire import WireEmail, wire_email

logger = logging.getLogger("outbox_worker.delivery")


@dataclass
class DeliveryResult:
    """What happened to one message: sent, or the last failure and who it is about."""

    sent: bool
    verdict: Classified | None = None  # the last try's failure; None when sent
    attempts: list[Attempt] = field(default_factory=list)
    provider_message_id: str = ""  # the HTTP API's id for the accepted message; blank over SMTP

    @property
    def blame(self) -> Blame | None:
        return None if self.verdict is None else self.verdict.blame

    @property
    def provider_level(self) -> bool:
        """The provider failed, not the message: hand it back without spending an attempt."""
        return self.verdict is not None and self.verdict.provider_level

    @property
    def transient(self) -> bool:
        """The message may go through later (always, when the provider failed)."""
        return self.verdict is not None and self.verdict.transient

    @property
    def error(self) -> str:
        return "" if self.verdict is None else self.verdict.description


def provider_message_id(email: EmailMultiAlternatives | WireEmail) -> str:
    """The id an anymail backend got for the accepted email, or "" (SMTP, or one id per recipient)."""
    status = getattr(email, "anymail_status", None)
    message_id = getattr(status, "message_id", None)
    return message_id[:255] if isinstance(message_id, str) else ""


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
    """Send one message; reconnect in-process (per `policy`) only when the provider failed.

    Never waits on the message's behalf: a message-level failure returns after
    its one try, and the caller puts the message back with the persisted backoff.
    Every try is recorded in `attempts`.
    """
    result = DeliveryResult(sent=False)
    try:
        email = email_for(message, connection)
    except Exception as exc:  # noqa: BLE001 - a row we cannot build is a recorded outcome, never a crash
        result.verdict = classify(exc)
        now = timezone.now()
        result.attempts.append(_attempt(message, worker_id, 1, now, result.verdict, finished=now))
        log_event(
            logger, logging.WARNING, "outbox.try_failed", id=message.pk, attempt=message.attempts, try_number=1,
            blame=str(result.verdict.blame), transient=result.verdict.transient, error=result.verdict.description,
        )  # fmt: skip
        return result

    send = partial(_send_once, message, email, connection=connection, worker_id=worker_id, attempts=result.attempts)
    try:
        try:
            # The first try needs no retry loop (setting one up per email cost as
            # much CPU as the try's bookkeeping); its failure is handed to the loop.
            send(try_number=1)
        except Exception as first_failure:  # replayed into the loop, which decides what follows
            try_number = 0
            for retry_state in policy.retrying(sleep=sleep, should_stop=should_stop):
                with retry_state:
                    try_number += 1
                    if try_number == 1:
                        raise first_failure
                    send(try_number=try_number)
        result.sent = True
        result.provider_message_id = provider_message_id(email)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded outcome
        result.verdict = classify(exc)
    return result


def email_for(message: OutboxMessage, connection: BaseEmailBackend) -> EmailMultiAlternatives | WireEmail:
    """The email to hand `connection` for `message`; raise MessageCannotBeBuilt if the row cannot be one.

    Django's own SMTP backend gets the bytes written straight from the row
    (`wire.wire_email`); every other backend, and every row the wire writer
    declines, gets the Django email built and verified by `mime.build_email`,
    which also gives the verdict on a row that cannot be sent.
    """
    if is_plain_smtp(connection):
        wire = wire_email(message)
        if wire is not None:
            return wire
    email = build_email(message, connection)
    # Echoed back by the provider in its webhooks (anymail's `metadata`), so an
    # event finds its message even before the provider's id is written. SMTP ignores it.
    email.metadata = {"outbox_id": str(message.pk)}
    return email


def _send_once(
    message: OutboxMessage,
    email: EmailMultiAlternatives | WireEmail,
    *,
    connection: BaseEmailBackend,
    worker_id: str,
    try_number: int,
    attempts: list[Attempt],
) -> None:
    """Make one try; record it in `attempts`; re-raise its error for the retry loop."""
    started = timezone.now()
    clock = time.monotonic()
    try:
        # Opened here rather than by send_messages(), which would close a
        # connection it opened itself after every message.
        connection.open()
        if not send_email(connection, email):
            raise BackendRefused("the email backend did not send the message")
    except Exception as exc:
        verdict = classify(exc)
        if verdict.provider_level or not verdict.answered:
            # The session may be broken. After a reply about this message
            # (a refused recipient, a 5xx after DATA) smtplib has reset the
            # session, and the next message can use the same connection.
            close_quietly(connection)
        attempts.append(_attempt(message, worker_id, try_number, started, verdict))
        log_event(
            logger, logging.WARNING, "outbox.try_failed",
            id=message.pk, attempt=message.attempts, try_number=try_number, blame=str(verdict.blame),
            transient=verdict.transient, code=verdict.smtp_code, http_status=verdict.http_status,
            duration_ms=round((time.monotonic() - clock) * 1000, 1), error=verdict.description,
        )  # fmt: skip
        raise
    attempts.append(_attempt(message, worker_id, try_number, started, None))


def _attempt(
    message: OutboxMessage,
    worker_id: str,
    try_number: int,
    started: datetime,
    verdict: Classified | None,
    finished: datetime | None = None,
) -> Attempt:
    """Return the DeliveryAttempt row to write for one try (`verdict` None: it was sent).

    Provider-level tries are recorded as `transient`: the message was not at
    fault and will be tried again (the error text says what failed).
    """
    if verdict is None:
        outcome, code, error = AttemptOutcome.SENT, None, ""
    else:
        outcome = AttemptOutcome.TRANSIENT if verdict.transient else AttemptOutcome.PERMANENT
        code, error = verdict.smtp_code, verdict.description
    return Attempt(
        message_id=message.pk,
        attempt=message.attempts,
        try_number=try_number,
        worker=worker_id,
        started_at=started,
        finished_at=finished or timezone.now(),
        outcome=outcome,
        smtp_code=code,
        error=error,
    )
