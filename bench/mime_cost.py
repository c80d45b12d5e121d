"""What building and verifying one confirmation email costs, per email (no database, no network).

    DEBUG=1 python -m bench.mime_cost

Compares, on one CPU and the real confirmation templates' size of message:
- Django alone: EmailMultiAlternatives.message().as_bytes() — what a send through Django always does;
- build_email(): the same, plus parsing the header block back and comparing it (bytes reused by the send);
- wire_email(): the same bytes written straight from the row (what a send over Django's SMTP backend does now);
- the enqueue-time check as it was: header-text rules, sanitize_address() on each address, build_email();
- the enqueue-time check now: header-text rules and check_mailbox() (plain addresses need no parse, the sender's
  verdict is remembered) and check_buildable() (each header judged alone and remembered, the bodies' encodability);
- the same with a subject never seen before (its header is built and verified: a remembered verdict does not help).
Prints microseconds per email (median of 5 interleaved rounds of N emails each).
"""

import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
import django

django.setup()

from django.core.mail import EmailMultiAlternatives  # noqa: E402
from django.core.mail.message import sanitize_address  # noqa: E402

from outbox_worker.mime import build_email, check_buildable, check_header_text, check_mailbox  # noqa: E402
from outbox_worker.models import OutboxMessage  # noqa: E402
from outbox_worker.wire import wire_email  # noqa: E402

N = 2000
ROUNDS = 5
TEXT = 'Olá, Ana Lúcia!\n\nSua matrícula no curso "Excel & Power BI d\'Ana" está confirmada.\n' * 4


def row() -> OutboxMessage:
    return OutboxMessage(
        from_email="Cursos <nao-responda@cursos.com.br>",
        to=["ana.lucia@example.com"],
        cc=[],
        bcc=[],
        reply_to=[],
        subject="Matrícula confirmada: Excel & Power BI d'Ana",
        body_text=TEXT,
        body_html=f"<html><body><p>{TEXT}</p></body></html>",
        headers={},
        message_id="<0123456789abcdef0123456789abcdef@cursos.com.br>",
    )


def django_only(message: OutboxMessage) -> None:
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.body_text,
        from_email=message.from_email,
        to=message.to,
        headers={"Message-ID": message.message_id},
    )
    email.attach_alternative(message.body_html, "text/html")
    email.message().as_bytes(linesep="\r\n")


def verified(message: OutboxMessage) -> None:
    # The send asks for the bytes again; build_email hands back the verified ones.
    build_email(message).message().as_bytes(linesep="\r\n")


def wire(message: OutboxMessage) -> None:
    wire_email(message)


_unique = iter(range(10**9))


def wire_new_recipient(message: OutboxMessage) -> None:
    # Each email to another student, with its own Message-ID: nothing of theirs is remembered.
    n = next(_unique)
    message.to = [f"aluno{n}@example.com"]
    message.message_id = f"<{n:032x}@cursos.com.br>"
    wire_email(message)


def enqueue_check_before(message: OutboxMessage) -> None:
    check_header_text(message.subject, what="subject")
    for address in [message.from_email, *message.to]:
        check_header_text(address, what="address")
        sanitize_address(address, "utf-8")
    build_email(message)


def enqueue_check(message: OutboxMessage) -> None:
    check_header_text(message.subject, what="subject")
    check_mailbox(message.from_email, what="from_email")
    for address in message.to:
        check_mailbox(address, what="to")
    check_buildable(message)


_fresh = iter(range(10**9))


def enqueue_check_new_subject(message: OutboxMessage) -> None:
    message.subject = f"Matrícula confirmada: curso nº {next(_fresh)}"
    enqueue_check(message)


def per_email_us(functions: dict) -> dict[str, float]:
    """Median µs per email for each function; rounds interleaved so machine load hits all alike."""
    message = row()
    rounds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(ROUNDS):
        for name, fn in functions.items():
            start = time.perf_counter()
            for _ in range(N):
                fn(message)
            rounds[name].append((time.perf_counter() - start) / N * 1e6)
    return {name: statistics.median(values) for name, values in rounds.items()}


if __name__ == "__main__":
    results = per_email_us(
        {
            "django build+serialise (a send, before)": django_only,
            "build_email + verify + serialise (a send, before)": verified,
            "wire_email (a send over Django's SMTP backend, now)": wire,
            "  now, each to a new recipient with its Message-ID": wire_new_recipient,
            "outbox_enqueue's checks, before (build_email)": enqueue_check_before,
            "outbox_enqueue's checks, now (check_buildable)": enqueue_check,
            "  now, with a subject never seen before": enqueue_check_new_subject,
        }
    )
    for name, microseconds in results.items():
        print(f"{name:50s} {microseconds:8.1f} µs/email")
