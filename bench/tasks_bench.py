"""The tasks benchmark: our outbox backend + `outbox_worker` vs django-tasks-db + `db_worker`, same machine.

    bench/run tasks            # ≈ 6 min: enqueue cost, drain of 5,000 no-op tasks, latency at 20/s, kill -9
    bench/run tasks --quick    # small counts: a smoke test, not numbers to publish

Each side has its own database (bench_tasks_ours, bench_tasks_ref) and its own
worker process started the way its docs say; rounds alternate the sides, and
the results are ratios between runs made back to back (the machine is shared).
Results: bench/results/tasks.json and docs/bench-tasks.png; written up in
docs/benchmarks-tasks.md.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common
from bench.common import Proc, log

SIDES = ("ours", "ref")
SETTINGS = "bench.tasksite.settings"


def side_env(side: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.update({"DJANGO_SETTINGS_MODULE": SETTINGS, "BENCH_TASKS_SIDE": side, "PYTHONPATH": str(common.ROOT), **extra})
    return env


def child(side: str, *args: str, timeout: float = 600) -> dict:
    """Run `python -m bench.tasks_bench child ARGS` for `side`; return its JSON answer."""
    out = subprocess.run(
        [common.PY, "-m", "bench.tasks_bench", "child", *args],
        cwd=common.ROOT, env=side_env(side), capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"child {side} {' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(side: str, name: str, *, drain: bool = False, extra: tuple[str, ...] = ()) -> Proc:
    """Start the side's worker as its docs say: ours `outbox_worker`, the reference `db_worker`."""
    if side == "ours":
        argv = [common.PY, "manage.py", "outbox_worker", *(["--once"] if drain else []), *extra]
    else:
        argv = [common.PY, "manage.py", "db_worker", "--queue-name", "*", "--no-startup-delay",
                *(["--batch"] if drain else []), *extra]  # fmt: skip
    return Proc(f"tasks-{name}", argv, side_env(side))


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# --- the benchmarks -----------------------------------------------------------------


def bench_enqueue(rounds: int, count: int) -> dict:
    """Cost of one `.enqueue()` in its own transaction, committed, from a warm process."""
    per_side: dict[str, list[float]] = {side: [] for side in SIDES}
    for n in range(rounds):
        for side in SIDES if n % 2 == 0 else reversed(SIDES):
            child(side, "reset")
            per_side[side].append(child(side, "enqueue-cost", str(count))["us_per_enqueue"])
            log(f"enqueue round {n + 1} {side}: {per_side[side][-1]:.0f} µs")
    ratios = [o / r for o, r in zip(per_side["ours"], per_side["ref"], strict=True)]
    return {"count": count, "us_per_enqueue": per_side, "ratio_ours_over_ref_median": statistics.median(ratios)}


def bench_drain(rounds: int, count: int) -> dict:
    """Wall time of one worker process running `count` queued no-op tasks and exiting (start-up included)."""
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for n in range(rounds):
        for side in SIDES if n % 2 == 0 else reversed(SIDES):
            child(side, "reset")
            child(side, "fill", str(count))
            proc = worker(side, f"drain-{side}-{n}", drain=True)
            proc.wait(timeout=900)
            wall = proc.ended - proc.started
            done = child(side, "finished")
            runs[side].append({"wall_s": wall, "rate_per_s": done["succeeded"] / wall, **done})
            log(f"drain round {n + 1} {side}: {done['succeeded']} in {wall:.1f} s ({done['succeeded'] / wall:.0f}/s)")
    ratios = [o["rate_per_s"] / r["rate_per_s"] for o, r in zip(runs["ours"], runs["ref"], strict=True)]
    return {"count": count, "runs": runs, "rate_ratio_ours_over_ref_median": statistics.median(ratios)}


def _percentiles(values: list[float]) -> dict:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"n": len(ordered), "p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": ordered[-1] * 1000}


def bench_latency(rate: float, seconds: float) -> dict:
    """Enqueue → start of the run, at `rate` tasks/s, each enqueue its own committed transaction."""
    variants = [
        ("ours", "ours (LISTEN/NOTIFY)", ()),
        ("ref", "db_worker (default --interval 1)", ()),
        ("ref", "db_worker --interval 0.1", ("--interval", "0.1")),
    ]
    results = {}
    expected = int(rate * seconds)
    for side, label, extra in variants:
        child(side, "reset")
        path = Path(tempfile.mkdtemp(prefix="bench_tasks_")) / "latency.log"
        proc = worker(side, f"latency-{len(results)}", extra=extra)
        ready = "outbox.listen_connected" if side == "ours" else "Starting worker"
        wait_for(lambda proc=proc, ready=ready: ready in proc.log_path.read_text(), timeout=30)
        child(side, "feed", str(rate), str(seconds), str(path), timeout=seconds + 120)
        wait_for(lambda path=path: path.exists() and len(path.read_text().splitlines()) >= expected, timeout=60)
        proc.stop()
        latencies = [float(line) for line in path.read_text().splitlines()] if path.exists() else []
        results[label] = {**_percentiles(latencies), "expected": expected} if latencies else {"n": 0}
        log(f"latency {label}: {results[label]}")
    return {"rate_per_s": rate, "seconds": seconds, "variants": results}


def bench_kill9(watch_seconds: float) -> dict:
    """kill -9 a worker mid-task, start a fresh one: does the task come back, and after how long?"""
    results = {}
    for side in SIDES:
        child(side, "reset")
        folder = Path(tempfile.mkdtemp(prefix="bench_tasks_kill_"))
        first = worker(side, f"kill-{side}-first")
        task_id = child(side, "enqueue-block", str(folder))["id"]
        if not wait_for(lambda folder=folder: (folder / "started").exists(), timeout=60):
            raise RuntimeError(f"{side}: the task never started")
        first.popen.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        killed_at = time.monotonic()
        (folder / "release").write_text("")
        second = worker(side, f"kill-{side}-second")
        statuses = []

        def finished(side: str = side, task_id: str = task_id, statuses: list = statuses) -> bool:
            status = child(side, "status", task_id)["status"]
            statuses.append(status)
            return status in ("SUCCESSFUL", "FAILED")

        came_back = wait_for(finished, timeout=watch_seconds, interval=1.0)
        second.stop()
        results[side] = {
            "came_back": came_back,
            "seconds_to_finish_after_kill": round(time.monotonic() - killed_at, 1) if came_back else None,
            "status_at_end": statuses[-1],
            "watched_s": watch_seconds,
            "finished_by_second_worker": (folder / "done").exists(),
        }
        log(f"kill -9 {side}: {results[side]}")
    return results


def email_drain_before_after(rounds: int, count: int, baseline: Path) -> dict:
    """The email drain (`outbox_worker --once`) by this tree's worker vs `baseline`'s (an export of main).

    Both trees run with the same settings (backend.settings from the environment) on
    bench_tasks_ours, against bench/sink.py; the rate is first to last accept.
    """
    rates: dict[str, list[float]] = {"baseline": [], "this": []}
    trees = {"baseline": baseline, "this": common.ROOT}
    for n in range(rounds):
        for which in ("baseline", "this") if n % 2 == 0 else ("this", "baseline"):
            child("ours", "reset-emails")
            child("ours", "fill-emails", str(count))
            sink = common.Sink(f"tasks-email-{which}-{n}").start()
            env = side_env("ours", EMAIL_URL=f"smtp://127.0.0.1:{sink.port}", SECRET_KEY="bench-only-not-secret",
                           ALLOWED_HOSTS="127.0.0.1", DATABASE_URL=f"{common.PG_URL}/bench_tasks_ours",
                           PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(trees[which]))  # fmt: skip
            env.pop("DJANGO_SETTINGS_MODULE")
            proc = _proc_in(trees[which], f"tasks-email-{which}-{n}", env)
            sink.wait_for(count, 600, [proc])
            proc.wait(timeout=60)
            rates[which].append(sink.rate())
            sink.proc.stop()
            log(f"email drain round {n + 1} {which}: {rates[which][-1]:.0f}/s ({len(sink.accepts)} accepted)")
    ratios = [t / b for t, b in zip(rates["this"], rates["baseline"], strict=True)]
    return {"count": count, "rates_per_s": rates, "ratio_this_over_baseline_median": statistics.median(ratios)}


def _proc_in(tree: Path, name: str, env: dict[str, str]) -> Proc:
    """`manage.py outbox_worker --once` run from `tree` (Proc runs from this tree only)."""
    common.LOGS.mkdir(exist_ok=True)
    proc = Proc.__new__(Proc)
    proc.name, proc.log_path = name, common.LOGS / f"{name}.log"
    proc.log = open(proc.log_path, "w")
    proc.started, proc.ended = time.time(), None
    proc.popen = subprocess.Popen([common.PY, "manage.py", "outbox_worker", "--once"], cwd=tree, env=env,
                                  stdout=proc.log, stderr=subprocess.STDOUT)  # fmt: skip
    return proc


def setup() -> None:
    for side in SIDES:
        name = f"bench_tasks_{side}"
        created = common.ensure_database(name)
        log(f"database {name}: {'created' if created else 'exists'}; migrating")
        subprocess.run([common.PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=common.ROOT,
                       env=side_env(side), check=True)  # fmt: skip


def run(quick: bool) -> dict:
    """All four measurements; bench/run saves the result (bench/results/tasks.json) and this draws the chart.

    With BENCH_BASELINE_TREE (an export of main, e.g. `git archive main | tar -x -C DIR`), also the
    email drain of that tree's worker vs this one's: what serving tasks costs the email path.
    """
    setup()
    result = {
        "enqueue": bench_enqueue(rounds=2 if quick else 4, count=200 if quick else 1000),
        "drain": bench_drain(rounds=1 if quick else 3, count=1000 if quick else 5000),
        "latency": bench_latency(rate=20, seconds=5 if quick else 15),
        "kill9": bench_kill9(watch_seconds=40 if quick else 90),
    }
    if baseline := os.environ.get("BENCH_BASELINE_TREE"):
        result["email_drain"] = email_drain_before_after(1 if quick else 3, 1000 if quick else 5000, Path(baseline))
    chart(result, common.DOCS / ("bench-tasks-quick.png" if quick else "bench-tasks.png"))
    return result


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (drain_ax, latency_ax) = plt.subplots(1, 2, figsize=(10, 4))
    runs = result["drain"]["runs"]
    rates = [statistics.median(r["rate_per_s"] for r in runs[side]) for side in SIDES]
    drain_ax.bar(["outbox_worker", "db_worker"], rates, color=["#1f5fa8", "#999"])
    drain_ax.set_title(f"Drain {result['drain']['count']:,} no-op tasks (tasks/s, median)")
    variants = result["latency"]["variants"]
    labels = list(variants)
    for offset, key in ((-0.2, "p50_ms"), (0.2, "p95_ms")):
        latency_ax.bar([n + offset for n in range(len(labels))], [variants[v].get(key, 0) for v in labels],
                       width=0.4, label=key.replace("_ms", ""))  # fmt: skip
    latency_ax.set_xticks(range(len(labels)), [label.replace(" (", "\n(") for label in labels], fontsize=7)
    latency_ax.set_yscale("log")
    latency_ax.set_title(f"Enqueue → start at {result['latency']['rate_per_s']:g} tasks/s (ms)")
    latency_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# --- the child side: runs inside Django, with one side's settings -----------------------


def _child(args: list[str]) -> dict:
    import django

    django.setup()
    from django.db import connection, transaction

    from bench import task_functions as fns

    side = os.environ["BENCH_TASKS_SIDE"]
    if side == "ours":
        from outbox_worker.models import OutboxTask as Row
        from outbox_worker.models import WorkerHeartbeat

        tables = [Row._meta.db_table, WorkerHeartbeat._meta.db_table]
    else:
        from django_tasks_db.models import DBTaskResult as Row

        tables = [Row._meta.db_table]
    action, rest = args[0], args[1:]
    if action == "reset":
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
            cursor.execute(f"VACUUM ANALYZE {tables[0]}")
        return {"ok": True}
    if action == "enqueue-cost":
        count = int(rest[0])
        with transaction.atomic():
            fns.noop.enqueue()  # warm: imports, the first connection, statement caches
        started = time.perf_counter()
        for _ in range(count):
            with transaction.atomic():
                fns.noop.enqueue()
        return {"us_per_enqueue": (time.perf_counter() - started) / count * 1e6}
    if action == "reset-emails":
        from outbox_worker.models import DeliveryAttempt, OutboxMessage

        with connection.cursor() as cursor:
            tables = [DeliveryAttempt._meta.db_table, OutboxMessage._meta.db_table, WorkerHeartbeat._meta.db_table]
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        return {"ok": True}
    if action == "fill-emails":
        from outbox_worker.services import outbox_enqueue

        with transaction.atomic():
            for n in range(int(rest[0])):
                body = "Olá! Sua matrícula foi confirmada.\n" * 20
                outbox_enqueue(to=[f"aluno{n}@example.com"], subject=f"Matrícula {n}", body_text=body, dedup_key=f"{n}")
        return {"ok": True}
    if action == "fill":
        with transaction.atomic():
            for _ in range(int(rest[0])):
                fns.noop.enqueue()
        return {"ok": True}
    if action == "finished":
        from django.db.models import Count

        counts = dict(Row.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        succeeded = counts.get("succeeded", 0) + counts.get("SUCCESSFUL", 0)
        return {"succeeded": succeeded, "statuses": counts}
    if action == "feed":
        rate, seconds, path = float(rest[0]), float(rest[1]), rest[2]
        total = int(rate * seconds)
        begin = time.monotonic()
        for n in range(total):
            pause = begin + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            with transaction.atomic():
                fns.stamp.enqueue(path, time.time())
        return {"enqueued": total, "seconds": time.monotonic() - begin}
    if action == "enqueue-block":
        with transaction.atomic():
            result = fns.block.enqueue(rest[0])
        return {"id": str(result.id)}
    if action == "status":
        from django_tasks import default_task_backend

        return {"status": str(default_task_backend.get_result(rest[0]).status)}
    raise SystemExit(f"unknown child action {action}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        print(json.dumps(_child(sys.argv[2:]), default=str))
    else:
        raise SystemExit("run it through the driver: bench/run tasks [--quick]")
