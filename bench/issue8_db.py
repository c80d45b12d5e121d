"""Issue 8's database-side benchmarks: the NOTIFY trigger under load, the enqueue cost, the index audit.

Run by name (`bench/run notify notify-sql enqueue indexes`) or all together with `bench/run issue8`.
The delivery-side ones (drain, faults) are in bench/issue8.py.
"""

import statistics
import time

from bench import common
from bench.common import OURS, REFS, Proc, Sink, child_env, http_load, log, manage_cmd, task
from bench.issue8 import median_ratio
from bench.sink import MTA_ACCEPT_DELAY

# --- notify: POST /api/enrollments/ with and without the trigger --------------------------------------


def notify(cfg) -> dict:
    """16 clients POSTing enrollments under gunicorn; the NOTIFY trigger on (worker LISTENs) vs off (worker polls).

    The trigger is switched with ALTER TABLE … ENABLE/DISABLE TRIGGER between blocks, on the same
    gunicorn, so the two variants share every other condition. A worker runs in both (it would in
    production); it sends to the MTA-like sink.
    """
    seconds = cfg.n(8, 4)
    rounds = cfg.n(6, 2)
    clients = 16
    web_concurrency = "4"  # 2 sync workers per core: each waits on PostgreSQL half the time
    product = task(OURS, "reset-ours")["product"]
    gunicorn = str(common.Path(common.PY).parent / "gunicorn")
    trigger = task(OURS, "trigger-name")["trigger"]
    runs: dict[str, list[dict]] = {"trigger": [], "no_trigger": []}
    with Sink("notify", accept_delay=MTA_ACCEPT_DELAY) as sink:
        port = common.free_port()
        env = child_env(OURS, sink.port, GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY=web_concurrency)
        env["GUNICORN_ACCESSLOG"] = "/dev/null"
        web = Proc("notify-gunicorn", [gunicorn, "backend.wsgi", "-c", "gunicorn.conf.py"], env)
        worker = None
        try:
            common.wait_port(port)
            http_load(port, "/api/enrollments/", product, clients, 2.0, f"warm-{time.time()}")
            for rnd in range(rounds):
                order = ("trigger", "no_trigger") if rnd % 2 == 0 else ("no_trigger", "trigger")
                for name in order:
                    _set_trigger(trigger, enabled=name == "trigger")
                    flags = [] if name == "trigger" else ["--no-notify"]
                    worker = Proc(
                        f"notify-worker-{name}-{rnd}",
                        manage_cmd("outbox_worker", *flags, *cfg.worker_flags),
                        # libpq names every connection of the worker, so its backends can be told apart.
                        child_env(OURS, sink.port, PGAPPNAME=WORKER_APP),
                    )
                    time.sleep(1.5)  # worker up (and LISTENing) before the load
                    meter = _notify_cpu_meter(web, worker, sink)
                    meter.start()
                    got = http_load(
                        port, "/api/enrollments/", product, clients, seconds, f"n-{name}-{rnd}-{time.time()}"
                    )
                    cpu = meter.stop()
                    worker.stop()
                    worker = None
                    ok = [r for r in got if r["status"] == 201]
                    lat = [r["latency"] * 1000 for r in ok]
                    result = {
                        "requests_ok": len(ok),
                        "errors": len(got) - len(ok),
                        "throughput_per_s": len(ok) / seconds,
                        "p50_ms": common.percentile(lat, 50),
                        "p99_ms": common.percentile(lat, 99),
                        # CPU milliseconds per accepted request, by part (see _notify_cpu_meter).
                        "cpu_ms_per_request": {k: 1000 * v / max(1, len(ok)) for k, v in cpu.items()},
                    }
                    per = "  ".join(f"{k} {v:.2f}" for k, v in result["cpu_ms_per_request"].items())
                    log(
                        f"  round {rnd + 1} {name}: {result['throughput_per_s']:.0f} req/s, "
                        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors {result['errors']}; "
                        f"CPU ms/request: {per}"
                    )
                    runs[name].append(result)
        finally:
            if worker is not None:
                worker.stop()
            _set_trigger(trigger, enabled=True)
            web.stop()
    ratio = median_ratio(runs, "trigger", "no_trigger", "throughput_per_s")
    p99 = median_ratio(runs, "trigger", "no_trigger", "p99_ms")
    log(f"notify: throughput with/without the trigger {ratio:.3f}x; p99 {p99:.2f}x")
    cpu_median = {
        name: {
            part: statistics.median(r["cpu_ms_per_request"][part] for r in results)
            for part in results[0]["cpu_ms_per_request"]
        }
        for name, results in runs.items()
    }
    for name, parts in cpu_median.items():
        log(f"notify: median CPU ms/request, {name}: " + "  ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    return {
        "clients": clients,
        "seconds": seconds,
        "rounds": rounds,
        "web_concurrency": web_concurrency,
        "trigger": trigger,
        "runs": runs,
        "throughput_ratio_trigger_vs_none": ratio,
        "cpu_ms_per_request_median": cpu_median,
        "p99_ratio_trigger_vs_none": p99,
        "threshold": 0.9,
    }


WORKER_APP = "bench-outbox-worker"


def _notify_cpu_meter(web: Proc, worker: Proc, sink: Sink) -> common.CpuMeter:
    """Who spends the CPU while the notify benchmark's clients POST: every part on this machine.

    pg_web and pg_worker are the PostgreSQL backends serving gunicorn and the worker (told apart by
    application_name), pg_other the server's own processes; clients is this process (the load
    threads, and little else while they run).
    """
    import os

    dbname = common.DATABASES[OURS]

    def backends(of_worker: bool) -> set[int]:
        found = common.postgres_backends(dbname)
        return {
            pid
            for pid, app in found.items()
            if (app == WORKER_APP or app.startswith("outbox_worker_listener")) == of_worker
        }

    def pg_other() -> set[int]:
        return common.postgres_processes() - set(common.postgres_backends(dbname))

    return common.CpuMeter(
        {
            "web": lambda: common.process_tree(web.pid),
            "pg_web": lambda: backends(False),
            "worker": lambda: common.process_tree(worker.pid),
            "pg_worker": lambda: backends(True),
            "pg_other": pg_other,
            "sink": lambda: common.process_tree(sink.proc.pid),
            "clients": lambda: {os.getpid()},
        }
    )


def notify_sql(cfg) -> dict:
    """The trigger's cost without HTTP or Python in the way: 16 connections committing one outbox INSERT each.

    Each transaction inserts a copy of a real confirmation row (synchronous_commit on, as the web
    process commits); trigger on vs off alternated in short blocks. This isolates what NOTIFY's
    database-wide lock through commit costs concurrent committers.
    """
    import threading

    seconds = cfg.n(4, 2)
    rounds = cfg.n(8, 3)
    clients = 16
    task(OURS, "seed-ours", "1")
    trigger = task(OURS, "trigger-name")["trigger"]
    conn = common.pg_connect(common.DATABASES[OURS])
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'outbox_worker_outboxmessage' "
            "AND column_name NOT IN ('id', 'message_id', 'dedup_key', 'status', 'available_at')"
        )
        cols = ", ".join(f'"{row[0]}"' for row in cursor.fetchall())
        cursor.execute("SELECT min(id) FROM outbox_worker_outboxmessage")
        template = cursor.fetchone()[0]
    conn.close()
    sql = (
        f"INSERT INTO outbox_worker_outboxmessage ({cols}, message_id, dedup_key, status, available_at) "
        f"SELECT {cols}, %s, %s, 'pending', clock_timestamp() FROM outbox_worker_outboxmessage WHERE id = %s"
    )
    run_tag = f"{time.time():.0f}"

    def block(name: str, rnd: int) -> float:
        counts = [0] * clients
        deadline = time.time() + seconds

        def client(index: int) -> None:
            c = common.pg_connect(common.DATABASES[OURS])
            c.autocommit = False
            with c.cursor() as cursor:
                n = 0
                while time.time() < deadline:
                    n += 1
                    key = f"{run_tag}.{name}.{rnd}.{index}.{n}"
                    cursor.execute(sql, [f"<ns.{key}@bench.local>", f"ns:{key}", template])
                    c.commit()
                    counts[index] += 1
            c.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / seconds

    # "trigger": 0007's trigger, NOTIFY on every due row. "idle_check": 0013's rule (in 0016's WHEN clause),
    # NOTIFY only while an idle worker holds the idle lock; with none idle (the state under load: here no
    # worker at all) the enqueue pays one shared advisory try-lock. "idle_worker": the same with a
    # connection holding the lock, as a sleeping worker does, so every enqueue NOTIFYs (the quiet-time
    # state: the cost of the old trigger).
    names = ("trigger", "no_trigger", "idle_check", "idle_worker")
    runs: dict[str, list[float]] = {name: [] for name in names}
    try:
        for rnd in range(rounds):
            order = names if rnd % 2 == 0 else tuple(reversed(names))
            for name in order:
                _set_trigger_when(idle_check=name != "trigger")  # recreates it: enable or disable after
                _set_trigger(trigger, enabled=name != "no_trigger")
                holder = _hold_idle_lock() if name == "idle_worker" else None
                try:
                    runs[name].append(block(name, rnd))
                finally:
                    if holder is not None:
                        holder.close()
            log(
                f"  round {rnd + 1}: {runs['trigger'][-1]:.0f} commits/s with 0007's trigger, "
                f"{runs['no_trigger'][-1]:.0f} without, {runs['idle_check'][-1]:.0f} with 0016's and no idle worker, "
                f"{runs['idle_worker'][-1]:.0f} with 0016's and an idle worker"
            )
    finally:
        _set_trigger_when(idle_check=True)  # what migration 0016 installs
        _set_trigger(trigger, enabled=True)

    def versus_none(name: str) -> float:
        return statistics.median(a / b for a, b in zip(runs[name], runs["no_trigger"], strict=True))

    ratio, idle, idle_worker = versus_none("trigger"), versus_none("idle_check"), versus_none("idle_worker")
    log(
        f"notify-sql: commits/s vs no trigger, median of per-round ratios: 0007's trigger {ratio:.3f}x; "
        f"0016's with no idle worker {idle:.3f}x, with an idle worker {idle_worker:.3f}x"
    )
    return {
        "clients": clients, "seconds": seconds, "rounds": rounds, "runs": runs, "ratio": ratio,
        "idle_check_ratio": idle, "idle_worker_ratio": idle_worker,
    }  # fmt: skip


def _hold_idle_lock():
    """A connection holding the idle lock, as a worker sleeping in LISTEN does; closing it lets go."""
    conn = common.pg_connect(common.DATABASES[OURS])
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [IDLE_KEY])
    return conn


# The emails' trigger as 0007 installed it (NOTIFY for every due row) and as 0016 installs it (the idle
# check of 0013, in the WHEN clause). An idle worker holds advisory lock IDLE_KEY.
IDLE_KEY = 7_361_000_013  # outbox_worker.idle.IDLE_LOCK_KEY
_DUE = "NEW.status = 'pending' AND NEW.available_at <= clock_timestamp() + interval '5 seconds'"


def _set_trigger_when(*, idle_check: bool) -> None:
    when = f"{_DUE} AND NOT pg_try_advisory_xact_lock_shared({IDLE_KEY})" if idle_check else _DUE
    conn = common.pg_connect(common.DATABASES[OURS])
    try:
        with conn.cursor() as cursor:
            cursor.execute("DROP TRIGGER outbox_worker_notify ON outbox_worker_outboxmessage")
            cursor.execute(
                "CREATE TRIGGER outbox_worker_notify AFTER INSERT OR UPDATE OF status, available_at "
                f"ON outbox_worker_outboxmessage FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION outbox_worker_notify()"
            )
    finally:
        conn.close()


def _set_trigger(name: str, *, enabled: bool) -> None:
    conn = common.pg_connect(common.DATABASES[OURS])
    try:
        with conn.cursor() as cursor:
            action = "ENABLE" if enabled else "DISABLE"
            cursor.execute(f'ALTER TABLE outbox_worker_outboxmessage {action} TRIGGER "{name}"')
    finally:
        conn.close()


# --- enqueue: the outbox write's cost, ours vs post-office in the same rounds ---------------------------


def enqueue(cfg) -> dict:
    """Benchmark 2, ours and the references alternated block by block, each ratio against its own baseline.

    One block is one child process timing `enrollment_create` (or the reference's create + queueing)
    against `Enrollment.objects.create` in one transaction, interleaved (bench/tasks.py
    `enqueue-cost`, `enqueue-cost-refs`). Ours runs as shipped and with its NOTIFY trigger disabled;
    post-office and django-mailer on bench_refs. enrollment_create also logs the enrollment (one
    INFO line), which post-office's `mail.send` does not: the like-for-like reference is post-office
    plus that same line (`post_office_logged`); `mail.send` alone is reported too. Each side's ratio
    is to its own baseline in the same process, and the two sides alternate within each round, so
    machine load hits both alike; the result is the median of the per-round ratios and of the
    per-round ours/post-office quotient.
    """
    rounds = cfg.n(12, 3)
    names = ("ours", "ours_without_trigger", "refs")
    per: dict[str, list[dict]] = {name: [] for name in names}
    trigger = task(OURS, "trigger-name")["trigger"]
    for rnd in range(rounds):
        order = names if rnd % 2 == 0 else tuple(reversed(names))
        for name in order:
            if name == "refs":
                got = task(REFS, "enqueue-cost-refs", "--rounds", "4", "--block", "25")
                per[name].append(
                    {
                        "without_email_ms": got["without_email"]["median_ms"],
                        "post_office_ms": got["post_office"]["median_ms"],
                        "post_office_ratio": got["post_office"]["ratio_median"],
                        "post_office_logged_ratio": got["post_office_logged"]["ratio_median"],
                        "django_mailer_ratio": got["django_mailer"]["ratio_median"],
                    }
                )
                continue
            _set_trigger(trigger, enabled=name == "ours")
            try:
                got = task(OURS, "enqueue-cost", "--rounds", "4", "--block", "25")
            finally:
                _set_trigger(trigger, enabled=True)
            per[name].append(
                {
                    "without_email_ms": got["without_email"]["median_ms"],
                    "with_outbox_ms": got["with_outbox"]["median_ms"],
                    "ratio": got["with_outbox"]["ratio_median"],
                    "prerendered_ratio": got["outbox_prerendered"]["ratio_median"],
                    "staff_notice_ratio": got["with_outbox_and_staff_notice"]["ratio_median"],
                }
            )
        log(
            f"enqueue round {rnd + 1}/{rounds}: ours {per['ours'][-1]['ratio']:.2f}x "
            f"({per['ours'][-1]['with_outbox_ms']:.2f} / {per['ours'][-1]['without_email_ms']:.2f} ms), "
            f"without the trigger {per['ours_without_trigger'][-1]['ratio']:.2f}x, "
            f"with the staff notice {per['ours'][-1]['staff_notice_ratio']:.2f}x; "
            f"post-office {per['refs'][-1]['post_office_ratio']:.2f}x "
            f"({per['refs'][-1]['post_office_ms']:.2f} / {per['refs'][-1]['without_email_ms']:.2f} ms), "
            f"with the same log line {per['refs'][-1]['post_office_logged_ratio']:.2f}x"
        )

    def median(name: str, key: str) -> float:
        return statistics.median(d[key] for d in per[name])

    counts = task(OURS, "index-writes")["per_enqueue"]
    out = {
        "rounds": rounds,
        "ratio_median": median("ours", "ratio"),
        "ratio_without_trigger_median": median("ours_without_trigger", "ratio"),
        "prerendered_ratio_median": median("ours", "prerendered_ratio"),
        "staff_notice_ratio_median": median("ours", "staff_notice_ratio"),
        "post_office_ratio": median("refs", "post_office_ratio"),
        "post_office_logged_ratio": median("refs", "post_office_logged_ratio"),
        "django_mailer_ratio": median("refs", "django_mailer_ratio"),
        "ours_vs_post_office_median": statistics.median(
            o["ratio"] / r["post_office_ratio"] for o, r in zip(per["ours"], per["refs"], strict=True)
        ),
        "ours_vs_post_office_logged_median": statistics.median(
            o["ratio"] / r["post_office_logged_ratio"] for o, r in zip(per["ours"], per["refs"], strict=True)
        ),
        "index_writes_per_enqueue": counts,
        "detail": per,
    }
    log(
        f"enqueue: ours {out['ratio_median']:.2f}x; post-office with the same log line (like for like) "
        f"{out['post_office_logged_ratio']:.2f}x, per-round quotient {out['ours_vs_post_office_logged_median']:.2f}; "
        f"post-office's mail.send alone {out['post_office_ratio']:.2f}x, "
        f"quotient {out['ours_vs_post_office_median']:.2f}; "
        f"ours without the trigger {out['ratio_without_trigger_median']:.2f}x, with the staff notice "
        f"{out['staff_notice_ratio_median']:.2f}x; django-mailer {out['django_mailer_ratio']:.2f}x "
        f"(index writes per enqueue {counts})"
    )
    return out


# --- indexes: which query uses which index ----------------------------------------------------------------


def indexes(cfg) -> dict:
    """EXPLAIN the outbox's queries on a big table (bench_claim_big) and say which index each one uses.

    The table gets `sent` rows with distinct recipients and sources (so an address or a source is
    selective, as in production), 0.5 % `failed`, a third of another kind, and 2,000 due rows.
    """
    rows = cfg.n(300_000, 50_000)
    log(f"indexes: filling bench_claim_big with {rows} sent rows and 2,000 due rows")
    task(OURS, "claim-setup", "--using", "claim_big", "--finished", str(rows), "--due", "2000", timeout=1800)
    conn = common.pg_connect(common.DATABASES["claim_big"])
    with conn.cursor() as cursor:
        cursor.execute(
            "UPDATE outbox_worker_outboxmessage SET \"to\" = jsonb_build_array('aluno' || id || '@example.com'), "
            "source = 'enrollments.enrollment:' || id, "
            "status = CASE WHEN id % 200 = 0 THEN 'failed' ELSE status END, "
            "kind = CASE WHEN id % 3 = 0 THEN 'other_kind' ELSE kind END"
        )
        cursor.execute("VACUUM ANALYZE outbox_worker_outboxmessage")
    conn.close()
    audit_result = task(OURS, "index-audit", "--using", "claim_big")
    for name, used_by in audit_result["used_by"].items():
        log(f"  {name}: {', '.join(used_by) or 'NOT USED'}")
    writes = task(OURS, "index-writes")
    log(f"  index entries per enqueue: {writes['per_enqueue']}")
    return {**audit_result, "index_writes": writes}
