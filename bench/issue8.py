"""Issue 8's delivery benchmarks: a fair drain against post-office, a faulty provider; the soak's audit.

`bench/run issue8` runs them with the database-side ones (bench/issue8_db.py), the profile and a
quick chaos soak, at reduced-but-meaningful counts; each can also run by name (`bench/run drain`).
Every comparison alternates its variants in the same rounds and reports the
median of the per-round ratios, since this 2-core machine is shared.
"""

import json
import os
import statistics
import time
from collections import Counter

from bench.common import OURS, PY, REFS, Proc, Sink, child_env, log, manage_cmd, task
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


def median_ratio(runs: dict[str, list[dict]], name: str, ref: str, key: str) -> float:
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
    # Two worker processes under one parent (--processes): the senders of one process share its GIL.
    variants["ours_processes_2"] = (OURS, manage_cmd("outbox_worker", "--once", "--processes", "2", *cfg.worker_flags))
    argv = manage_cmd("outbox_worker", "--once", "--processes", "2", "--concurrency", "4", *cfg.worker_flags)
    variants["ours_processes_2_concurrency_4"] = (OURS, argv)
    if baseline := os.environ.get("BENCH_BASELINE_TREE"):
        # Another tree's worker (an export of main: `git archive main | tar -x -C DIR`) in the same rounds:
        # before/after ratios not disturbed by the machine's load changing between two invocations.
        # `python DIR/manage.py` puts DIR first on sys.path, so DIR's outbox_worker is the one imported.
        variants["baseline"] = (OURS, [PY, os.path.join(baseline, "manage.py"), "outbox_worker", "--once"])
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
        f"{name}_vs_post_office_{key}": median_ratio(runs, name, "post_office", key)
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
                    "seconds_to_95pct": time_to_fraction(sink, 0.95, n),
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
    ratio = median_ratio(runs, "faulty_10pct", "healthy", "distinct_rate_per_s")
    # The same ratio over the first 95 % / 99 % of messages: the drain's pace while there is a backlog,
    # without the tail of the few messages refused twice in a row, which wait the greylisting backoff.
    by_fraction = {
        pct: median_ratio(runs, "healthy", "faulty_10pct", f"seconds_to_{pct}pct") for pct in (95, 99)
    }  # healthy seconds / faulty seconds = faulty rate / healthy rate
    log(
        f"faults: faulty/healthy throughput (distinct messages accepted per second): to the last message "
        f"{ratio:.2f}x, to 99 % {by_fraction[99]:.2f}x, to 95 % {by_fraction[95]:.2f}x (target >= 0.8)"
    )
    return {
        "emails": n, "rounds": rounds, "settle_s": settle, "runs": runs, "faulty_vs_healthy": ratio,
        "faulty_vs_healthy_to_99pct": by_fraction[99], "faulty_vs_healthy_to_95pct": by_fraction[95], "target": 0.8,
    }  # fmt: skip


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
