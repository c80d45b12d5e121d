"""The workers' heartbeats, and the one definition of a live worker (by the database clock)."""

from datetime import timedelta

from django.db import models
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from ..conf import outbox_settings


def worker_stale_after() -> timedelta:
    """How long a worker may go without a heartbeat before it counts as dead."""
    return timedelta(seconds=outbox_settings.WORKER_STALE_AFTER)


class WorkerHeartbeatQuerySet(QuerySet):
    """The one definition of a live worker, judged by the database clock.

    A worker is alive while its heartbeat is newer than `worker_stale_after()`
    by the database's own clock, so workers (and the admin) whose clocks differ
    still agree. The claim statement says the same thing in SQL
    (`alive_worker_sql`); both are built here so they cannot drift apart.
    """

    def alive(self) -> "WorkerHeartbeatQuerySet":
        return self.filter(stopped_at__isnull=True, last_seen_at__gte=Now() - worker_stale_after())

    def stale(self) -> "WorkerHeartbeatQuerySet":
        return self.filter(last_seen_at__lt=Now() - worker_stale_after())

    def stopped(self) -> "WorkerHeartbeatQuerySet":
        """Workers that shut down cleanly (SIGTERM, end of --once)."""
        return self.filter(stopped_at__isnull=False)

    def dead(self) -> "WorkerHeartbeatQuerySet":
        """Workers that went silent without stopping: killed, or their host lost."""
        return self.stale().filter(stopped_at__isnull=True)


def database_now_sql(vendor: str) -> str:
    """SQL for "now" by the database clock, comparable with stored datetimes.

    PostgreSQL: the statement's start (not the transaction's, which a long
    transaction would freeze). SQLite: its CURRENT_TIMESTAMP has no fraction
    and a different shape from the text Django stores, which is compared as
    text; so build Django's shape, to the end of the current millisecond
    (SQLite has no finer clock), or a row stored a few microseconds ago by
    Python would not yet be due.
    """
    if vendor == "postgresql":
        return "statement_timestamp()"
    return "(strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now') || '999')"


def database_now_plus_sql(vendor: str, seconds_param: str) -> str:
    """SQL for "now + %(seconds_param)s seconds" by the database clock (a negative value goes back)."""
    if vendor == "postgresql":
        return f"(statement_timestamp() + make_interval(secs => %({seconds_param})s))"
    return f"(strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', printf('%%+f seconds', %({seconds_param})s)) || '999')"


def alive_worker_sql(vendor: str, *, worker_column: str, stale_param: str) -> str:
    """SQL condition: the worker named by `worker_column` has a live heartbeat (see WorkerHeartbeatQuerySet).

    `stale_param` names a parameter the caller sets to `-worker_stale_after()` in seconds.
    """
    table = WorkerHeartbeat._meta.db_table
    return (
        f"EXISTS (SELECT 1 FROM {table} AS heartbeat WHERE heartbeat.worker_id = {worker_column} "
        f"AND heartbeat.stopped_at IS NULL AND heartbeat.last_seen_at >= {database_now_plus_sql(vendor, stale_param)})"
    )


class WorkerHeartbeat(models.Model):
    """A running worker process, refreshed every few seconds while it lives.

    Liveness has one meaning everywhere (`WorkerHeartbeat.objects.alive()`):
    the claim takes back the rows of a worker whose heartbeat went stale, and
    operators see the same workers as alive. A clean shutdown sets
    `stopped_at`; a crash leaves the row to go stale. Either way operators see
    when the worker was last seen, until outbox_prune removes the row.
    """

    worker_id = models.CharField(_("worker"), max_length=128, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(_("started at"))
    last_seen_at = models.DateTimeField(_("last seen at"), db_index=True)
    # Set while the worker holds delivery back because the provider fails us
    # (provider.ProviderGate); operators see it in outbox_status and the admin.
    paused_since = models.DateTimeField(_("delivery paused since"), null=True, blank=True)
    pause_reason = models.TextField(_("pause reason"), blank=True)
    stopped_at = models.DateTimeField(_("stopped at"), null=True, blank=True)

    objects = WorkerHeartbeatQuerySet.as_manager()

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return self.worker_id
