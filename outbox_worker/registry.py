"""How the host project names its outbox rows: labels for kinds and sources, and search shortcuts.

The outbox knows nothing of its host's domain. A row says what caused it as
`kind` ("enrollment_confirmation") and `source` ("app_label.model:pk"); the
host project tells the admin how to show and find them by pointing the
`OUTBOX_REGISTRY` setting at a module that defines any of:

    KIND_LABELS: Mapping[str, str]               kind -> human label (may be lazily translated)
    def source_labels(sources: list[str]) -> dict[str, str]
        labels for many sources in one go (one query per page, not per row)
    def search_sources(term: str) -> list[str] | None
        the sources an operator's search term names ("order 42"), or None when it names none
    SEARCH_HELP: str                              one line on those shortcuts, shown under the search box
    def fix_recipient_url(source: str, user) -> str | None
        the host's page where `user` may correct the recipient of `source` and send again, or None
        (no such page for this source, or `user` may not use it); offered on a bounced or failed message

Whatever the module leaves out shows the raw value, which is also the
default without the setting.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from typing import Any

from django.conf import settings
from django.urls import NoReverseMatch, reverse


def _no_fix_page(source: str, user: Any) -> str | None:
    return None


@dataclass(frozen=True)
class OutboxRegistry:
    kind_labels: Mapping[str, str]
    source_labels: Callable[[list[str]], dict[str, str]]
    search_sources: Callable[[str], list[str] | None]
    search_help: str = ""
    fix_recipient_url: Callable[[str, Any], str | None] = _no_fix_page

    def kind_label(self, kind: str) -> str:
        return str(self.kind_labels.get(kind, kind)) if kind else ""

    def labels_for_sources(self, sources: Iterable[str]) -> dict[str, str]:
        """Return a label for every non-empty source, the raw value where the host has none."""
        wanted = sorted({source for source in sources if source})
        labels = self.source_labels(wanted) if wanted else {}
        return {source: str(labels.get(source) or source) for source in wanted}


def _no_labels(sources: list[str]) -> dict[str, str]:
    return {}


def _no_shortcuts(term: str) -> list[str] | None:
    return None


RAW = OutboxRegistry(kind_labels={}, source_labels=_no_labels, search_sources=_no_shortcuts)


@cache
def _load(path: str) -> OutboxRegistry:
    module = import_module(path)
    return OutboxRegistry(
        kind_labels=getattr(module, "KIND_LABELS", {}),
        source_labels=getattr(module, "source_labels", _no_labels),
        search_sources=getattr(module, "search_sources", _no_shortcuts),
        search_help=str(getattr(module, "SEARCH_HELP", "")),
        fix_recipient_url=getattr(module, "fix_recipient_url", _no_fix_page),
    )


def outbox_registry() -> OutboxRegistry:
    """Return the host's registry (settings.OUTBOX_REGISTRY, a module path), or one that shows raw values."""
    path = getattr(settings, "OUTBOX_REGISTRY", "")
    return _load(path) if path else RAW


def source_admin_url(source: str) -> str | None:
    """Return the admin page of the object named by `source` ("app_label.model:pk"), if it has one."""
    label, _, pk = source.partition(":")
    app_label, _, model_name = label.partition(".")
    if not (app_label and model_name and pk):
        return None
    try:
        return reverse(f"admin:{app_label}_{model_name}_change", args=[pk])
    except NoReverseMatch:
        return None
