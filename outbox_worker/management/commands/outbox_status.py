import json
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.translation import gettext as _

from outbox_worker.models import WorkerHeartbeat
from outbox_worker.selectors import outbox_health


class Command(BaseCommand):
    help = (
        "Print the outbox's health: counts by status, the oldest due message, failures in the last hour, "
        "live workers and whether their delivery is paused, then the stopped and dead ones with when they were "
        "last seen. With --max-age, exit 2 when the oldest due "
        "message is older (for alerting; a pause does not silence it)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object, for scripts.")
        parser.add_argument(
            "--max-age", type=float, default=None, metavar="SECONDS",
            help="Exit with status 2 if a due message has waited longer than this many seconds.",
        )  # fmt: skip

    def handle(self, *args: object, **options: object) -> None:
        health = outbox_health()
        gone = gone_workers()
        if options["json"]:
            as_json = {kind: [{**w, **_iso(w)} for w in workers] for kind, workers in gone.items()}
            self.stdout.write(json.dumps({**health.as_dict(), **as_json}))
        else:
            counts = " ".join(f"{status}={n}" for status, n in health.counts.items())
            age = _("none") if health.oldest_due_age_seconds is None else f"{health.oldest_due_age_seconds:.0f}s"
            self.stdout.write(_("messages: %(counts)s") % {"counts": counts})
            self.stdout.write(_("oldest due message waiting: %(age)s") % {"age": age})
            self.stdout.write(_("failed in the last hour: %(count)d") % {"count": health.failed_last_hour})
            # Alive by the heartbeat, as the claim and the admin judge it (WorkerHeartbeat.objects.alive()).
            self.stdout.write(_("live workers: %(count)d") % {"count": len(health.workers)})
            for worker in health.workers:
                seen = f"{worker['last_seen_at']:%Y-%m-%d %H:%M:%S%z}"
                self.stdout.write(
                    "  " + _("%(worker)s last seen %(seen)s") % {"worker": worker["worker_id"], "seen": seen}
                )
                if worker["paused_since"] is not None:
                    self.stdout.write(f"    {pause_line(worker['paused_since'], worker['pause_reason'])}")
            headings = {
                "stopped_workers": _("stopped workers: %(count)d"),
                "dead_workers": _("dead workers: %(count)d"),
            }
            for kind, workers in gone.items():
                self.stdout.write(headings[kind] % {"count": len(workers)})
                for worker in workers:
                    line = _("%(worker)s last seen %(seen)s") % {
                        "worker": worker["worker_id"],
                        "seen": f"{worker['last_seen_at']:%Y-%m-%d %H:%M:%S%z}",
                    }
                    if worker["stopped_at"]:
                        line += _(", stopped %(at)s") % {"at": f"{worker['stopped_at']:%Y-%m-%d %H:%M:%S%z}"}
                    self.stdout.write("  " + line)
        max_age = options["max_age"]
        if max_age is not None and (health.oldest_due_age_seconds or 0) > max_age:
            paused = [w for w in health.workers if w["paused_since"] is not None]
            why = f"; {pause_line(paused[0]['paused_since'], paused[0]['pause_reason'])}" if paused else ""
            waited = _("oldest due message has waited %(age)ss (more than %(max_age)ss)") % {
                "age": f"{health.oldest_due_age_seconds:.0f}",
                "max_age": f"{max_age:.0f}",
            }
            raise CommandError(waited + why, returncode=2)


def gone_workers() -> dict[str, list[dict]]:
    """The workers no longer alive, newest first: stopped cleanly, or dead (silent without stopping).

    Both judged by the one liveness definition (WorkerHeartbeat.objects, models/workers.py) the claim
    and the admin use; the rows stay until outbox_prune removes them.
    """
    fields = ("worker_id", "hostname", "pid", "last_seen_at", "stopped_at")
    return {
        "stopped_workers": list(WorkerHeartbeat.objects.stopped().values(*fields)),
        "dead_workers": list(WorkerHeartbeat.objects.dead().values(*fields)),
    }


def _iso(worker: dict) -> dict:
    return {key: worker[key].isoformat() if worker[key] else None for key in ("last_seen_at", "stopped_at")}


def pause_line(since: datetime, reason: str) -> str:
    """Say, in the operators' language, since when and why a worker holds delivery back."""
    one_line = " ".join(reason.split())  # an API's error text may span lines
    moment = f"{timezone.localtime(since):%d/%m/%Y %H:%M:%S}"
    return _("delivery paused since %(since)s : %(reason)s") % {"since": moment, "reason": one_line}
