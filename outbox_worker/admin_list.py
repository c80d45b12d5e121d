"""The outbox changelist's parts that keep it fast on a table of millions of rows."""

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

from .registry import outbox_registry
from .selectors import capped_count, outbox_kinds


class CappedCountPaginator(Paginator):
    """A paginator that never counts past selectors.COUNT_CAP rows.

    An exact COUNT(*) over a million rows on every page load is what makes a
    big changelist slow; past the cap the page says "more than …" instead.
    """

    @cached_property
    def count(self) -> int:
        counted = capped_count(self.object_list)
        self.count_is_capped = counted.capped
        return counted.value

    count_is_capped = False


class OutboxChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters=None) -> QuerySet:
        # The list never shows bodies; they can be large, so leave them in the table.
        return super().get_queryset(request, exclude_parameters).defer("body_text", "body_html", "headers")


class KindFilter(admin.SimpleListFilter):
    title = _("kind")
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        kinds = outbox_kinds()
        if self.value() and self.value() not in kinds:
            kinds.append(self.value())
        registry = outbox_registry()
        return [(kind, registry.kind_label(kind)) for kind in kinds]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(kind=self.value()) if self.value() else queryset
