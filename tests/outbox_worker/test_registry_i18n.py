"""The outbox is domain-free (the host labels and finds its rows) and ships a compiled pt_BR catalogue."""

import gettext
import re
from pathlib import Path

import polib
import pytest
from django.test import override_settings
from django.utils import translation

from outbox_worker import registry
from outbox_worker.models import OutboxMessage
from outbox_worker.selectors import outbox_search
from tests.factories import enqueue_messages, make_product

APP = Path(__file__).resolve().parents[2] / "outbox_worker"
HOST_WORDS = re.compile(r"\bfrom backend\b|\bimport backend\b|enrollments\.enrollment|[Mm]atr[ií]cula")
CATALOGUE = APP / "locale" / "pt_BR" / "LC_MESSAGES"


def test_outbox_worker_names_nothing_of_its_host():
    offenders = []
    for path in APP.rglob("*"):
        if path.suffix in (".py", ".html", ".js"):
            text = path.read_text(encoding="utf-8")
            for found in HOST_WORDS.findall(text):
                offenders.append(f"{path.relative_to(APP)}: {found}")
    assert offenders == []


def test_the_compiled_catalogue_matches_its_source():
    # CI has no gettext: the .mo is committed, and must say exactly what the .po says.
    po = polib.pofile(str(CATALOGUE / "django.po"))
    with open(CATALOGUE / "django.mo", "rb") as handle:
        mo = gettext.GNUTranslations(handle)
    for entry in po.translated_entries():
        if entry.msgctxt:
            assert mo.pgettext(entry.msgctxt, entry.msgid) == entry.msgstr, entry.msgid
        elif entry.msgid_plural:
            assert mo.ngettext(entry.msgid, entry.msgid_plural, 1) == entry.msgstr_plural[0]
            assert mo.ngettext(entry.msgid, entry.msgid_plural, 2) == entry.msgstr_plural[1]
        else:
            assert mo.gettext(entry.msgid) == entry.msgstr, entry.msgid
    assert len(po.translated_entries()) > 60


@pytest.mark.django_db
def test_without_a_registry_kinds_and_sources_show_raw_and_search_has_no_shortcuts():
    registry._load.cache_clear()
    enqueue_messages(1, source="enrollments.enrollment:42")
    with override_settings(OUTBOX_REGISTRY=""):
        raw = registry.outbox_registry()
        assert raw.kind_label("enrollment_confirmation") == "enrollment_confirmation"
        assert raw.labels_for_sources(["enrollments.enrollment:42"]) == {
            "enrollments.enrollment:42": "enrollments.enrollment:42"
        }
        assert outbox_search(queryset=OutboxMessage.objects.all(), term="matrícula 42").count() == 0
        # The raw source stays an exact search.
        assert outbox_search(queryset=OutboxMessage.objects.all(), term="enrollments.enrollment:42").count() == 1


@pytest.mark.django_db
def test_the_host_registry_labels_kinds_and_sources_in_one_query(django_assert_num_queries):
    from backend.enrollments.services import enrollment_create

    product = make_product()
    ana = enrollment_create(product=product, name="Ana Souza", email="ana@example.com")
    bia = enrollment_create(product=product, name="Bia Lima", email="bia@example.com")
    host = registry.outbox_registry()

    with django_assert_num_queries(1):
        labels = host.labels_for_sources([ana.outbox_source, bia.outbox_source, "other.thing:1"])

    assert labels == {
        ana.outbox_source: f"Matrícula #{ana.pk} — Ana Souza",
        bia.outbox_source: f"Matrícula #{bia.pk} — Bia Lima",
        "other.thing:1": "other.thing:1",
    }
    assert host.kind_label("enrollment_confirmation") == "Confirmação de matrícula"
    assert host.kind_label("unknown_kind") == "unknown_kind"


def test_outbox_strings_are_english_ids_translated_to_portuguese():
    from outbox_worker.admin_text import REFUSALS
    from outbox_worker.services import Refusal

    with translation.override("en"):
        assert str(REFUSALS[Refusal.HELD]) == "a worker is delivering it right now"
    with translation.override("pt-br"):
        assert str(REFUSALS[Refusal.HELD]) == "um worker está entregando agora"
