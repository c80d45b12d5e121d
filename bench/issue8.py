"""Issue 8's benchmarks: a fair drain, a faulty provider, the NOTIFY trigger under load, the enqueue cost.

`bench/run issue8` runs them all (plus the profile and a quick chaos soak) at
reduced-but-meaningful counts; each can also run by name (`bench/run drain`).
Every comparison alternates its variants in the same rounds and reports the
median of the per-round ratios, since this 2-core machine is shared.
"""

import json
import statistics
import time
from collections import Counter

from bench import common
from bench.common import OURS, REFS, Proc, Sink, child_env, log, manage_cmd, task
from bench.sink import MTA_ACCEPT_DELAY

# The sinks the drain compares. "mta" is the one the targets use: never faster than a real MTA.
SINKS = {
    "mta": {"accept_delay": MTA_ACCEPT_DELAY},
    "instant": {},
    "aiosmtpd": {"impl": "aiosmtpd"},
}


def timed_drain(label: str, count: int, sink: Sink, procs: list[Proc], timeout: float) -> dict:
    """Wait for `count` accepts, then for the processes to exit; split the wall clock into its phases.

    wall = start-up (process start → first accept) + sending (first → last accept, the sink-side
    rate) + exit (last accept → last process gone). A harness that reports only one of these can
    disagree with another by the start-up and exit of a short drain.
    """
    started = min(p.started for p in procs)
    complete = sink.wait_for(count, timeout, procs)
    for proc in procs:
        try:
            proc.wait(30 if complete else 0.1)
        except Exception:  # noqa: BLE001 - a process that hangs on exit is stopped and measured as such
            proc.stop()
    ended = max(p.ended or time.time() for p in procs)
    sink.poll()
    first, last = sink.first_last()
    delivered = len(sink.accepts)
    result = {
        "delivered": delivered,
        "expected": count,
        "complete": complete,
        "duplicates": sink.duplicates(),
        "smtp_connections": sink.connections,
        "sink_rate_per_s": sink.rate(),
        "wall_rate_per_s": delivered / (ended - started),
        "startup_s": first - started,
        "sending_s": last - first,
        "exit_s": ended - last,
        "wall_s": ended - started,
    }
    log(
        f"  {label}: {delivered}/{count}; sink {result['sink_rate_per_s']:.0f}/s, "
        f"wall {result['wall_rate_per_s']:.0f}/s "
        f"(start-up {result['startup_s']:.2f}s + sending {result['sending_s']:.2f}s + exit {result['exit_s']:.2f}s), "
        f"{sink.connections} connections, {result['duplicates']} duplicates"
    )
    return result


def _median_ratio(runs: dict[str, list[dict]], name: str, ref: str, key: str) -> float:
    pairs = zip(runs[name], runs[ref], strict=True)
    return statistics.median(a[key] / b[key] for a, b in pairs if b[key])


# --- drain: ours vs post-office at its defaults -----------------------------------------------------


def drain_variants(cfg) -> dict[str, tuple[str, list[str]]]:
    """name -> (settings, argv) for every sender the drain compares."""
    # "ours" is the worker as shipped (its default --concurrency); the others set it explicitly.
    variants = {"ours": (OURS, manage_cmd("outbox_worker", "--once", *cfg.worker_flags))}
    for threads in (1, 2, 4, 8):
        argv = manage_cmd("outbox_worker", "--once", "--concurrency", str(threads), *cfg.worker_flags)
        variants[f"ours_concurrency_{threads}"] = (OURS, argv)
    # post-office exactly as installed: 5 threads per process, batches of 100, LOG_LEVEL 2 (bench/refs/settings.py).
    variants["post_office"] = (REFS, manage_cmd("send_queued_mail"))
    return variants


def run_one(name: str, settings: str, argv: list[str], n: int, sink_kwargs: dict, tag: str) -> dict:
    task(settings, "seed-ours" if settings == OURS else "seed-postoffice", str(n))
    with Sink(f"{tag}-{name}", **sink_kwargs) as sink:
        proc = Proc(f"{tag}-{name}", argv, child_env(settings, sink.port))
        return timed_drain(name, n, sink, [proc], 300)


def drain(cfg) -> dict:
    """2,000 emails on the MTA-like sink: every variant in each round; then once on the other sinks."""
    n = cfg.n(2000, 500)
    rounds = cfg.n(3, 1)
    variants = drain_variants(cfg)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for rnd in range(rounds):
        log(f"drain round {rnd + 1}/{rounds}: {n} emails each, sink accepts after {MTA_ACCEPT_DELAY * 1000:.0f} ms")
        for name, (settings, argv) in variants.items():
            runs[name].append(run_one(name, settings, argv, n, SINKS["mta"], f"drain-mta-{rnd}"))
    ratios = {
        f"{name}_vs_post_office_{key}": _median_ratio(runs, name, "post_office", key)
        for name in variants
        if name != "post_office"
        for key in ("sink_rate_per_s", "wall_rate_per_s")
    }
    log(f"drain: median per-round ratios {json.dumps({k: round(v, 2) for k, v in ratios.items()})}")
    # Why two harnesses disagree: the same pair on a sink that answers at once and on aiosmtpd.
    other: dict[str, dict[str, dict]] = {}
    for sink_name in ("instant", "aiosmtpd"):
        log(f"drain on the {sink_name} sink (one round): ours, ours --concurrency 1, post-office")
        other[sink_name] = {
            name: run_one(name, *variants[name], n, SINKS[sink_name], f"drain-{sink_name}")
            for name in ("ours", "ours_concurrency_1", "post_office")
        }
        po = other[sink_name]["post_office"]
        for name in ("ours", "ours_concurrency_1"):
            for key in ("sink_rate_per_s", "wall_rate_per_s"):
                other[sink_name][f"{name}_vs_post_office_{key}"] = other[sink_name][name][key] / po[key]
    return {
        "emails": n,
        "rounds": rounds,
        "mta_accept_delay_s": MTA_ACCEPT_DELAY,
        "runs": runs,
        "ratios": ratios,
        "other_sinks": other,
    }


# --- faults: 10 % random 421/451 ----------------------------------------------------------------------


def audit(sink: Sink, killed_pids: set[int] = frozenset()) -> dict:
    """Compare the outbox table with what the sink accepted: lost, failed, pending, duplicates."""
    rows = task(OURS, "dump-ours")["rows"]
    accepted = Counter(mid for _, mid in sink.accepts)
    statuses = Counter(status for _, status in rows)
    lost = [mid for mid, status in rows if mid not in accepted and status not in ("pending", "sending", "failed")]
    duplicates = {mid: n for mid, n in accepted.items() if n > 1}
    # A duplicate is explained when an earlier accept came over a connection of a worker we killed:
    # that worker had handed the email over and died before writing the outcome. The sink names the
    # process behind a connection when its lookup is quick enough; when it is not, a connection the
    # client dropped without QUIT counts as a killed worker's (healthy workers say QUIT).
    explained = 0
    by_mid: dict[str, list[tuple[float, str]]] = {}
    for ts, conn, mid in sink.accepts_by_connection:
        if mid in duplicates:
            by_mid.setdefault(mid, []).append((ts, conn))
    for sends in by_mid.values():
        earlier = sorted(sends)[:-1]
        if any(_by_a_killed_worker(sink, conn, killed_pids) for _, conn in earlier):
            explained += 1
    return {
        "rows": len(rows),
        "statuses": dict(statuses),
        "accepted_unique": len(accepted),
        "lost": len(lost),
        "lost_examples": lost[:5],
        "failed": statuses.get("failed", 0),
        "not_finished": statuses.get("pending", 0) + statuses.get("sending", 0),
        "duplicates": sum(n - 1 for n in duplicates.values()),
        "duplicate_messages": len(duplicates),
        "duplicate_messages_explained_by_a_kill": explained,
    }


def _by_a_killed_worker(sink: Sink, conn: str, killed_pids: set[int]) -> bool:
    pid = sink.connection_pids.get(conn)
    if pid:
        return pid in killed_pids
    return bool(killed_pids) and sink.connection_ends.get(conn) == "client"


def time_to_fraction(sink: Sink, fraction: float, total: int) -> float:
    """Seconds from the first accept until `fraction` of `total` distinct messages were accepted."""
    seen: set[str] = set()
    first = None
    for ts, mid in sorted(sink.accepts):
        first = ts if first is None else first
        seen.add(mid)
        if len(seen) >= fraction * total:
            return ts - first
    return float("nan")


def faults(cfg) -> dict:
    """A long-running worker draining on a healthy MTA-like sink vs one failing 10 % of RCPTs (421/451)."""
    n = cfg.n(2000, 500)
    rounds = cfg.n(2, 1)
    # Long enough for the healthy drain many times over; a worker that sleeps through every retry
    # does not finish in it, and its rate over what it did deliver is what the ratio compares.
    settle = cfg.n(90, 60)
    flags = [*cfg.worker_flags]
    runs: dict[str, list[dict]] = {"healthy": [], "faulty_10pct": []}
    for rnd in range(rounds):
        for name, fail_rate in (("healthy", 0.0), ("faulty_10pct", 0.10)):
            task(OURS, "seed-ours", str(n))
            log(f"faults round {rnd + 1}/{rounds} {name}: {n} emails, worker runs until all accepted or {settle}s")
            with Sink(f"faults-{name}-{rnd}", accept_delay=MTA_ACCEPT_DELAY, fail_rate=fail_rate) as sink:
                worker = Proc(f"faults-{name}-{rnd}", manage_cmd("outbox_worker", *flags), child_env(OURS, sink.port))
                distinct_done = _wait_distinct(sink, n, settle, [worker])
                worker.stop()
                sink.poll()
                result = {
                    "all_accepted": distinct_done,
                    "seconds_to_99pct": time_to_fraction(sink, 0.99, n),
                    "seconds_to_100pct": time_to_fraction(sink, 1.0, n),
                    "distinct_rate_per_s": _distinct_rate(sink),
                    "smtp_connections": sink.connections,
                    **audit(sink),
                }
            log(
                f"  {name}: {result['accepted_unique']}/{n} distinct at {result['distinct_rate_per_s']:.0f}/s; "
                f"99 % in {result['seconds_to_99pct']:.1f}s, "
                f"100 % in {result['seconds_to_100pct']:.1f}s; lost {result['lost']}, failed {result['failed']}, "
                f"duplicates {result['duplicates']}, unfinished {result['not_finished']}"
            )
            runs[name].append(result)
    ratio = _median_ratio(runs, "faulty_10pct", "healthy", "distinct_rate_per_s")
    log(f"faults: faulty/healthy throughput (distinct messages accepted per second): {ratio:.2f}x (target >= 0.8)")
    return {"emails": n, "rounds": rounds, "settle_s": settle, "runs": runs, "faulty_vs_healthy": ratio, "target": 0.8}


def _distinct_rate(sink: Sink) -> float:
    """Distinct messages accepted per second, from the first accept to the last new Message-ID."""
    seen: set[str] = set()
    first = last = None
    for ts, mid in sorted(sink.accepts):
        first = ts if first is None else first
        if mid not in seen:
            seen.add(mid)
            last = ts
    return (len(seen) - 1) / (last - first) if first is not None and last > first else 0.0


def _wait_distinct(sink: Sink, count: int, timeout: float, procs: list[Proc]) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        sink.poll()
        if len({mid for _, mid in sink.accepts}) >= count:
            return True
        if not any(p.alive() for p in procs):
            return False
        time.sleep(0.1)
    return False


# --- notify: POST /api/enrollments/ with and without the trigger --------------------------------------


def notify(cfg) -> dict:
    """16 clients POSTing enrollments under gunicorn; the NOTIFY trigger on (worker LISTENs) vs off (worker polls).

    The trigger is switched with ALTER TABLE … ENABLE/DISABLE TRIGGER between blocks, on the same
    gunicorn, so the two variants share every other condition. A worker runs in both (it would in
    production); it sends to the MTA-like sink.
    """
    from bench.run import http_load

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
                        child_env(OURS, sink.port),
                    )
                    time.sleep(1.5)  # worker up (and LISTENing) before the load
                    got = http_load(
                        port, "/api/enrollments/", product, clients, seconds, f"n-{name}-{rnd}-{time.time()}"
                    )
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
                    }
                    log(
                        f"  round {rnd + 1} {name}: {result['throughput_per_s']:.0f} req/s, "
                        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors {result['errors']}"
                    )
                    runs[name].append(result)
        finally:
            if worker is not None:
                worker.stop()
            _set_trigger(trigger, enabled=True)
            web.stop()
    ratio = _median_ratio(runs, "trigger", "no_trigger", "throughput_per_s")
    p99 = _median_ratio(runs, "trigger", "no_trigger", "p99_ms")
    log(f"notify: throughput with/without the trigger {ratio:.3f}x; p99 {p99:.2f}x")
    return {
        "clients": clients,
        "seconds": seconds,
        "rounds": rounds,
        "web_concurrency": web_concurrency,
        "trigger": trigger,
        "runs": runs,
        "throughput_ratio_trigger_vs_none": ratio,
        "p99_ratio_trigger_vs_none": p99,
        "threshold": 0.9,
    }


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

    runs: dict[str, list[float]] = {"trigger": [], "no_trigger": []}
    try:
        for rnd in range(rounds):
            order = ("trigger", "no_trigger") if rnd % 2 == 0 else ("no_trigger", "trigger")
            for name in order:
                _set_trigger(trigger, enabled=name == "trigger")
                runs[name].append(block(name, rnd))
            log(
                f"  round {rnd + 1}: {runs['trigger'][-1]:.0f} commits/s with the trigger, "
                f"{runs['no_trigger'][-1]:.0f} without"
            )
    finally:
        _set_trigger(trigger, enabled=True)
    ratio = statistics.median(a / b for a, b in zip(runs["trigger"], runs["no_trigger"], strict=True))
    log(f"notify-sql: commits/s with/without the trigger, median of per-round ratios {ratio:.3f}x")
    return {"clients": clients, "seconds": seconds, "rounds": rounds, "runs": runs, "ratio": ratio}


def _set_trigger(name: str, *, enabled: bool) -> None:
    conn = common.pg_connect(common.DATABASES[OURS])
    try:
        with conn.cursor() as cursor:
            action = "ENABLE" if enabled else "DISABLE"
            cursor.execute(f'ALTER TABLE outbox_worker_outboxmessage {action} TRIGGER "{name}"')
    finally:
        conn.close()


# --- enqueue: the outbox write's cost, index set before/after --------------------------------------------


def enqueue(cfg) -> dict:
    """Benchmark 2 on two databases that differ only in the outbox's indexes, alternated block by block.

    bench_outbox has every migration; bench_outbox_before stops just before the outbox's
    `*_trim_indexes` migration (`bench/run setup-db`). post-office's ratio comes from the same
    invocation (bench_refs).
    """
    rounds = cfg.n(12, 3)
    # "after_without_trigger": bench_outbox with its NOTIFY trigger disabled for the block, to show
    # what the trigger adds to one enqueue (one client: no contention on its lock).
    names = ("before", "after", "after_without_trigger")
    per: dict[str, list[float]] = {name: [] for name in names}
    detail: dict[str, list[dict]] = {name: [] for name in names}
    trigger = task(OURS, "trigger-name")["trigger"]
    for rnd in range(rounds):
        order = names if rnd % 2 == 0 else tuple(reversed(names))
        for name in order:
            db = common.DATABASES["before"] if name == "before" else common.DATABASES[OURS]
            if name == "after_without_trigger":
                _set_trigger(trigger, enabled=False)
            try:
                got = task_on(db, "enqueue-cost", "--rounds", "4", "--block", "25")
            finally:
                _set_trigger(trigger, enabled=True)
            per[name].append(got["with_outbox"]["ratio_median"])
            detail[name].append(
                {
                    "without_email_ms": got["without_email"]["median_ms"],
                    "with_outbox_ms": got["with_outbox"]["median_ms"],
                    "ratio": got["with_outbox"]["ratio_median"],
                    "prerendered_ratio": got["outbox_prerendered"]["ratio_median"],
                }
            )
        log(
            f"enqueue round {rnd + 1}/{rounds}: ratio before {per['before'][-1]:.2f}x, after {per['after'][-1]:.2f}x, "
            f"after without the trigger {per['after_without_trigger'][-1]:.2f}x"
        )
    refs = task(REFS, "enqueue-cost-refs", "--rounds", str(max(2, rounds // 2)), "--block", "50")
    counts = {
        name: task_on(db, "index-writes")["per_enqueue"]
        for name, db in (("before", common.DATABASES["before"]), ("after", common.DATABASES[OURS]))
    }
    out = {
        "rounds": rounds,
        "ratio_before_median": statistics.median(per["before"]),
        "ratio_after_median": statistics.median(per["after"]),
        "ratio_after_without_trigger_median": statistics.median(per["after_without_trigger"]),
        "prerendered_ratio_after_median": statistics.median(d["prerendered_ratio"] for d in detail["after"]),
        "post_office_ratio": refs["post_office"]["ratio_median"],
        "django_mailer_ratio": refs["django_mailer"]["ratio_median"],
        "index_writes_per_enqueue": counts,
        "detail": detail,
    }
    log(
        f"enqueue: ours {out['ratio_before_median']:.2f}x before, {out['ratio_after_median']:.2f}x after, "
        f"{out['ratio_after_without_trigger_median']:.2f}x after without the trigger "
        f"(index writes per enqueue {counts}); post-office {out['post_office_ratio']:.2f}x"
    )
    return out


def task_on(dbname: str, *args: str) -> dict:
    """bench.tasks with our settings on another database of ours."""
    import subprocess

    env = child_env(OURS)
    env["BENCH_OURS_DB_URL"] = f"{common.PG_URL}/{dbname}"
    out = subprocess.run(
        [common.PY, "-m", "bench.tasks", *args], cwd=common.ROOT, env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.tasks {' '.join(args)} on {dbname} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
