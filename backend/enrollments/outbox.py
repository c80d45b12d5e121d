"""How the outbox admin names and finds this project's emails (settings.OUTBOX_REGISTRY)."""

import re

from .models import Enrollment
from .services import CONFIRMATION_KIND

# This project speaks pt-BR only: labels are plain strings.
KIND_LABELS = {CONFIRMATION_KIND: "Confirmação de matrícula"}

SEARCH_HELP = "A matrícula que causou o email (ex.: matrícula 42): busca exata e rápida."

_ENROLLMENT_SOURCE = f"{Enrollment._meta.label_lower}:"
# "matrícula 42", "Matricula:42", "enrollment #42" or the raw source itself.
_ENROLLMENT_TERM = re.compile(r"^(?:matr[ií]cula|enrollment|enrollments\.enrollment)\s*[:#]?\s*(\d+)$", re.IGNORECASE)


def source_labels(sources: list[str]) -> dict[str, str]:
    """Label enrollment sources "Matrícula #3 — Ana Souza", with one query for all of them."""
    pks = [source.removeprefix(_ENROLLMENT_SOURCE) for source in sources if source.startswith(_ENROLLMENT_SOURCE)]
    pks = [int(pk) for pk in pks if pk.isdigit()]
    names = dict(Enrollment.objects.filter(pk__in=pks).values_list("pk", "name"))
    return {f"{_ENROLLMENT_SOURCE}{pk}": f"Matrícula #{pk} — {name}" for pk, name in names.items()}


def search_sources(term: str) -> list[str] | None:
    """The enrollment an operator's search names ("matrícula 42"), so the search is an index lookup."""
    match = _ENROLLMENT_TERM.match(term)
    return [f"{_ENROLLMENT_SOURCE}{match.group(1)}"] if match else None


def fix_recipient_url(source: str, user) -> str | None:
    """The enrollment page that corrects the student's address and resends, for a user allowed to use it.

    The same permissions as that page itself (EnrollmentAdmin.has_fix_email_permission): it changes
    the enrollment and queues an email.
    """
    if not (user.has_perm("outbox_worker.resend_outboxmessage") and user.has_perm("enrollments.change_enrollment")):
        return None
    from .admin import enrollment_fix_email_url  # the admin module registers admin classes: import it when needed

    return enrollment_fix_email_url(source)
