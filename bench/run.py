"""The benchmark driver: `bench/run all`, `bench/run b3 b2`, `bench/run report` (see bench/README.md).

Everything after `--` is passed to every `outbox_worker` this driver starts,
so the same numbers can be re-measured with other worker options.
"""

import argparse
import os
import subprocess
import sys
import time

from bench import common
from bench.common import OURS, REFS, Proc, Sink, child_env, log, manage_cmd, save, task

ORDER = ["b3", "b2", "b7", "b1", "b5", "b6", "b8", "b4"]


class Config:
    def __init__(self, quick: bool, worker_flags: list[str]) -> None:
        self.quick = quick
        self.worker_flags = worker_flags

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def command(self) -> str:
        parts = ["bench/run", *sys.argv[1:]]
        return " ".join(parts)


def setup_db() -> None:
    for settings in (OURS, REFS):
        name = common.DATABASES[settings]
        created = common.ensure_database(name)
        log(f"database {name}: {'created' if created else 'exists'}; migrating")
        subprocess.run(
            manage_cmd("migrate", "--noinput", "-v", "0"), cwd=common.ROOT, env=child_env(settings), check=True
        )
    for alias in ("claim_small", "claim_big"):
        name = common.DATABASES[alias]
        created = common.ensure_database(name)
        log(f"database {name}: {'created' if created else 'exists'}; migrating")
        subprocess.run(
            manage_cmd("migrate", "--noinput", "-v", "0", "--database", alias),
            cwd=common.ROOT,
            env=child_env(OURS),
            check=True,
        )


def ours_worker(name: str, sink: Sink, cfg: Config, *extra: str, once: bool = True) -> Proc:
    argv = manage_cmd("outbox_worker", *(["--once"] if once else []), *extra, *cfg.worker_flags)
    return Proc(name, argv, child_env(OURS, sink.port))


def drain(label: str, count: int, sink: Sink, procs: list[Proc], timeout: float) -> dict:
    """Wait for `count` accepts at the sink (or every process gone); stop the processes; summarise."""
    started = min(p.started for p in procs)
    ok = sink.wait_for(count, timeout, procs)
    finished = time.time()
    for proc in procs:
        if proc.alive():
            try:
                proc.wait(5 if ok else 0.1)
            except subprocess.TimeoutExpired:
                proc.stop()
    sink.poll()
    result = {
        "delivered": len(sink.accepts),
        "expected": count,
        "complete": ok,
        "unique": len({mid for _, mid in sink.accepts}),
        "duplicates": sink.duplicates(),
        "smtp_connections": sink.connections,
        "rate_per_s": sink.rate(),
        "wall_s": finished - started,
        "wall_rate_per_s": len(sink.accepts) / (finished - started),
    }
    log(
        f"  {label}: {result['delivered']}/{count} in {result['wall_s']:.1f}s wall, "
        f"{result['rate_per_s']:.0f}/s at the sink, {sink.connections} SMTP connections, "
        f"{result['duplicates']} duplicates"
    )
    return result


# --- 3. delivery throughput ------------------------------------------------------------


def b3(cfg: Config) -> dict:
    n = cfg.n(5000, 1000)
    rounds = cfg.n(2, 1)
    timeout = 300
    runs: dict[str, list[dict]] = {"ours": [], "post_office": [], "django_mailer": [], "smtplib_ceiling": []}
    for rnd in range(rounds):
        log(f"b3 round {rnd + 1}/{rounds}: {n} emails each")
        task(OURS, "seed-ours", str(n))
        with Sink(f"b3-ours-{rnd}") as sink:
            worker = ours_worker(f"b3-ours-worker-{rnd}", sink, cfg)
            runs["ours"].append(drain("ours outbox_worker --once", n, sink, [worker], timeout))

        task(REFS, "seed-postoffice", str(n))
        with Sink(f"b3-postoffice-{rnd}") as sink:
            proc = Proc(f"b3-postoffice-{rnd}", manage_cmd("send_queued_mail"), child_env(REFS, sink.port))
            runs["post_office"].append(drain("post-office send_queued_mail", n, sink, [proc], timeout))

        task(REFS, "seed-mailer", str(n))
        with Sink(f"b3-mailer-{rnd}") as sink:
            proc = Proc(f"b3-mailer-{rnd}", manage_cmd("send_mail"), child_env(REFS, sink.port))
            runs["django_mailer"].append(drain("django-mailer send_mail", n, sink, [proc], timeout))

        with Sink(f"b3-ceiling-{rnd}") as sink:
            argv = [common.PY, "-m", "bench.tasks", "smtplib-ceiling", str(n), "--port", str(sink.port)]
            proc = Proc(f"b3-ceiling-{rnd}", argv, child_env(OURS, sink.port))
            runs["smtplib_ceiling"].append(drain("bare smtplib loop, one connection", n, sink, [proc], timeout))

    best = {name: max(r["rate_per_s"] for r in rs) for name, rs in runs.items()}
    ratios = {
        "ours_vs_post_office": best["ours"] / best["post_office"],
        "ours_vs_django_mailer": best["ours"] / best["django_mailer"],
        "ours_vs_ceiling": best["ours"] / best["smtplib_ceiling"],
    }
    log(f"b3: best rates {best}; ratios {ratios}")
    return {"emails": n, "rounds": rounds, "runs": runs, "best_rate_per_s": best, "ratios": ratios}


BENCHMARKS = {"b3": b3}


def main() -> None:
    argv = sys.argv[1:]
    worker_flags: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, worker_flags = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("what", nargs="+", help="setup-db, all, report, or benchmark names: " + " ".join(ORDER))
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter runs (a smoke test)")
    args = parser.parse_args(argv)
    cfg = Config(args.quick, worker_flags)
    if args.what == ["setup-db"]:
        setup_db()
        return
    names = ORDER if args.what == ["all"] else args.what
    machine = common.machine()
    for name in names:
        if name == "report":
            from bench import charts

            charts.main()
            continue
        if name not in BENCHMARKS:
            parser.error(f"unknown benchmark {name!r}")
        log(f"=== {name} ({'quick' if cfg.quick else 'full'}) worker flags: {cfg.worker_flags or 'none'}")
        started = time.time()
        data = BENCHMARKS[name](cfg)
        data.update(
            {
                "command": cfg.command(),
                "quick": cfg.quick,
                "worker_flags": cfg.worker_flags,
                "seconds": round(time.time() - started, 1),
                "machine": machine,
            }
        )
        path = save(name + ("-quick" if cfg.quick else ""), data)
        log(f"=== {name} done in {data['seconds']}s -> {path.relative_to(common.ROOT)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
