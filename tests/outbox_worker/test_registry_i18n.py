"""The outbox is domain-free (the host labels and finds its rows) and ships a compiled pt_BR catalogue."""

import ast
import gettext
import re
from pathlib import Path

import polib
import pytest
from django.test import override_settings
from django.utils import translation
from django.utils.translation.template import templatize

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


# --- every user-facing string is a gettext call with an English id, translated ------------------

GETTEXT = {"_", "gettext", "gettext_lazy", "ngettext", "ngettext_lazy", "pgettext", "pgettext_lazy"}
# Latin-1 letters (ç, ã, é…; not the —, …, → and × the English copy uses) or words English never uses.
PORTUGUESE = re.compile(
    r"[À-ÖØ-öø-ÿ]|\b(?:n[aã]o|de|da|das|dos|em|para|com|uma|pelo|pela|sim|mensage[mn]s?|endere[cç]os?|enviad[ao]s?"
    r"|reenvi[ae]|situa[cç][aã]o|ativa|retirad[ao]s?|quando|entrega|provedor|eventos|criad[ao]|erro|falhou|aluno)\b",
    re.IGNORECASE,
)


HTML_TAG = re.compile(r"<[^>]*>")  # "<em>" is markup, not the Portuguese "em"


def _call_name(node: ast.AST) -> str:
    func = node.func if isinstance(node, ast.Call) else None
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def scan(source: str) -> tuple[list[str], set[tuple[str | None, str]]]:
    """Return (Portuguese literals outside gettext calls, the (context, msgid) pairs gettext is called with)."""
    tree = ast.parse(source)
    inside_gettext: set[int] = set()
    docstrings: set[int] = set()
    msgids: set[tuple[str | None, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and _literal(first.value) is not None:
                docstrings.add(id(first.value))
        name = _call_name(node)
        if name in GETTEXT:
            inside_gettext.update(id(child) for child in ast.walk(node))
            args = [_literal(arg) for arg in node.args]
            context = args.pop(0) if name.startswith("p") and args else None
            ids = args[:2] if name.startswith(("n", "pn")) else args[:1]
            msgids.update((context, msgid) for msgid in ids if msgid)
    offenders = [
        node.value
        for node in ast.walk(tree)
        if _literal(node) is not None
        and id(node) not in inside_gettext | docstrings
        and PORTUGUESE.search(HTML_TAG.sub(" ", node.value))
    ]
    return offenders, msgids


def _outbox_sources() -> dict[str, str]:
    return {
        str(path.relative_to(APP)): path.read_text(encoding="utf-8")
        for path in sorted(APP.rglob("*.py"))
        if "migrations" not in path.parts
    }


def test_the_scan_finds_portuguese_literals_and_gettext_ids():
    offenders, msgids = scan(
        '"""Docstrings may say entregue."""\n'
        "from django.utils.translation import gettext_lazy as _, ngettext, pgettext_lazy\n"
        'A = "aceito pelo provedor"\n'
        'B = _("accepted by the provider")\n'
        'C = f"{n} endereços"\n'
        'D = ngettext("%d task", "%d tasks", n), pgettext_lazy("status", "sent")\n'
        'E = "delivered"\n'
    )
    assert offenders == ["aceito pelo provedor", " endereços"]
    assert msgids == {
        (None, "accepted by the provider"), (None, "%d task"), (None, "%d tasks"), ("status", "sent")
    }  # fmt: skip


def test_no_portuguese_literal_outside_gettext_in_outbox_worker():
    # pt-BR belongs in the catalogue; the code speaks English message ids (issue 12).
    offenders = [f"{path}: {text!r}" for path, source in _outbox_sources().items() for text in scan(source)[0]]
    assert offenders == []


def test_every_gettext_id_in_outbox_worker_has_a_pt_br_translation():
    po = polib.pofile(str(CATALOGUE / "django.po"))
    translated = {(entry.msgctxt, entry.msgid) for entry in po.translated_entries()}
    translated |= {(entry.msgctxt, entry.msgid_plural) for entry in po.translated_entries() if entry.msgid_plural}
    used = {(path, key) for path, source in _outbox_sources().items() for key in scan(source)[1]}
    missing = sorted(
        f"{path}: {context or ''}|{msgid}" for path, (context, msgid) in used if (context, msgid) not in translated
    )
    assert missing == []
    assert len(used) > 100  # the scan did see the app's strings


# Template tags and the text Django's templatize turns them into: gettext(u'…'), ngettext(u'…', u'…', count)…
TEMPLATE_TAG = re.compile(r"{%.*?%}|{{.*?}}|{#.*?#}|<[^>]*>", re.DOTALL)
TEMPLATE_TRANSLATED = re.compile(r"{%\s*(?:translate|trans)\b.*?%}|{%\s*blocktrans.*?endblocktrans\w*\s*%}", re.DOTALL)
TEMPLATIZED_CALL = re.compile(r"\b(n?p?gettext)\(((?:u'(?:[^'\\]|\\.)*'(?:, )?)+)")


def _template_sources() -> dict[str, str]:
    return {
        str(path.relative_to(APP)): path.read_text(encoding="utf-8") for path in (APP / "templates").rglob("*.html")
    }


def test_no_portuguese_text_outside_translate_tags_in_outbox_worker_templates():
    offenders = []
    for path, source in _template_sources().items():
        text = TEMPLATE_TAG.sub(" ", TEMPLATE_TRANSLATED.sub(" ", source))
        offenders += [f"{path}: {found!r}" for found in PORTUGUESE.findall(text)]
    assert offenders == []


def test_every_template_msgid_has_a_pt_br_translation():
    po = polib.pofile(str(CATALOGUE / "django.po"))
    ours = {(entry.msgctxt, entry.msgid) for entry in po.translated_entries()}
    ours |= {(entry.msgctxt, entry.msgid_plural) for entry in po.translated_entries() if entry.msgid_plural}
    used = set()
    for path, source in _template_sources().items():
        for call in TEMPLATIZED_CALL.finditer(templatize(source)):
            args = list(ast.literal_eval(f"({call[2].rstrip(', ')},)"))
            context = args.pop(0) if call[1].startswith(("pg", "np")) else None
            used |= {(path, context, msgid) for msgid in (args[:2] if call[1].startswith("n") else args[:1])}
    with translation.override("pt-br"):
        # An id of Django's own admin ("Home") is translated by Django's catalogue.
        missing = sorted(
            f"{path}: {msgid}"
            for path, context, msgid in used
            if (context, msgid) not in ours and translation.gettext(msgid) == msgid
        )
    assert missing == []
    assert len(used) > 30


def test_the_library_speaks_of_a_recipient_and_this_project_of_a_student(settings):
    # outbox_worker knows nothing of students; this project's LOCALE_PATHS says "aluno".
    from django.utils import translation

    text = "Check the address with the recipient, correct it and send again."
    with translation.override("pt-br"):
        assert "com o aluno" in translation.gettext(text)
        settings.LOCALE_PATHS = []
        assert "com o destinatário" in translation.gettext(text)
