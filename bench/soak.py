"""Chaos soak: `bench/run soak` (full, ≈ 9 min) or `bench/run soak --quick` (≈ 2 min).

Three `outbox_worker` processes drain distinct-recipient emails while:
- every KILL_EVERY seconds one of them, at random, gets SIGKILL and a fresh one takes its place;
- the sink answers 20 % of RCPTs with a transient error (421 and close, or 451);
- 10 % of recipients are greylisted: 451 at RCPT until GREYLIST seconds after the sink first saw them;
- the SMTP server is down (connections refused) for OUTAGE seconds in the middle;
- once, every database connection of the workers is cut with pg_terminate_backend.

Then the chaos stops and the workers get until the deadline to finish. The audit compares the
outbox table with the sink: lost (enqueued, never accepted by the sink and not pending), failed,
duplicates (accepted twice, by Message-ID) and how many duplicates a kill explains (an earlier
accept came over a connection of a worker that was then killed before writing the outcome).
Target: 0 lost, 0 failed. Durations shrink with --quick; leases are shortened (OUTBOX_LEASE_SECONDS)
so a killed worker's rows come back within the run.
"""

import random
import signal
import time
from collections import Counter
from dataclasses import dataclass

from bench import common
from bench.common import OURS, Proc, Sink, child_env, log, manage_cmd, task
from bench.issue8 import audit


@dataclass(frozen=True)
class Plan:
    messages: int
    workers: int
    kill_every: float
    fail_rate: float
    greylist: float
    greylist_seconds: float
    outage_at: float
    outage_seconds: float
    terminate_at: float
    chaos_until: float
    deadline: float
    lease_seconds: float

    @classmethod
    def for_config(cls, quick: bool) -> "Plan":
        if quick:
            return cls(1000, 3, 2.0, 0.20, 0.10, 15.0, 15.0, 20.0, 45.0, 60.0, 130.0, 10.0)
        return cls(5000, 3, 2.0, 0.20, 0.10, 60.0, 60.0, 120.0, 200.0, 240.0, 540.0, 30.0)


def run(cfg) -> dict:
    plan = Plan.for_config(cfg.quick)
    task(OURS, "seed-soak", str(plan.messages))
    log(
        f"soak: {plan.messages} emails, {plan.workers} workers, SIGKILL every {plan.kill_every}s, "
        f"{plan.fail_rate:.0%} transient failures, {plan.greylist:.0%} greylisted for {plan.greylist_seconds}s, "
        f"SMTP down {plan.outage_at}-{plan.outage_at + plan.outage_seconds}s, pg_terminate_backend at "
        f"{plan.terminate_at}s, chaos until {plan.chaos_until}s, deadline {plan.deadline}s"
    )
    sink = Sink(
        "soak",
        fail_rate=plan.fail_rate,
        greylist=plan.greylist,
        greylist_seconds=plan.greylist_seconds,
        resolve_pids=True,
    ).start()
    env = child_env(OURS, sink.port, OUTBOX_LEASE_SECONDS=str(plan.lease_seconds))
    spawned = 0

    def spawn() -> Proc:
        nonlocal spawned
        spawned += 1
        return Proc(f"soak-worker-{spawned}", manage_cmd("outbox_worker", *cfg.worker_flags), env)

    workers = [spawn() for _ in range(plan.workers)]
    killed: set[int] = set()
    events: Counter[str] = Counter()
    start = time.time()
    next_kill = start + plan.kill_every
    outage_done = terminate_done = False
    in_outage = False
    next_report = start + 10
    db = common.pg_connect(common.DATABASES[OURS])
    try:
        while (now := time.time()) - start < plan.deadline:
            elapsed = now - start
            chaos = elapsed < plan.chaos_until
            if chaos and now >= next_kill:
                victim = random.randrange(len(workers))
                if workers[victim].alive():
                    killed.add(workers[victim].pid)
                    workers[victim].stop(signal.SIGKILL)
                    events["sigkill"] += 1
                workers[victim] = spawn()
                next_kill = now + plan.kill_every
            for i, proc in enumerate(workers):
                if not proc.alive():  # died by itself: note it and replace it
                    events["exited_by_itself"] += 1
                    workers[i] = spawn()
            if not outage_done and not in_outage and elapsed >= plan.outage_at:
                sink.halt()
                in_outage = True
                log(f"  {elapsed:.0f}s: SMTP outage starts")
            if in_outage and elapsed >= plan.outage_at + plan.outage_seconds:
                sink.launch()
                in_outage, outage_done = False, True
                log(f"  {elapsed:.0f}s: SMTP back")
            if not terminate_done and elapsed >= plan.terminate_at:
                events["backends_terminated"] = _terminate_worker_backends(db)
                terminate_done = True
                log(f"  {elapsed:.0f}s: pg_terminate_backend on {events['backends_terminated']} worker connections")
            statuses = _statuses(db)
            if now >= next_report:
                sink.poll()
                log(f"  {elapsed:.0f}s: {len({m for _, m in sink.accepts})} accepted; {dict(statuses)}")
                next_report = now + 10
            if not chaos and not in_outage and statuses.get("pending", 0) + statuses.get("sending", 0) == 0:
                break
            time.sleep(0.2)
        finished_after = time.time() - start
    finally:
        for proc in workers:
            proc.stop()
        if not in_outage:
            sink.stop()
        db.close()
    sink.poll()
    result = audit(sink, killed)
    result.update(
        {
            "plan": plan.__dict__,
            "seconds": round(finished_after, 1),
            "events": dict(events),
            "workers_started": spawned,
            "smtp_connections": sink.connections,
            "connections_resolved_to_a_pid": sum(1 for pid in sink.connection_pids.values() if pid),
            "target": {"lost": 0, "failed": 0},
        }
    )
    log(
        f"soak: {result['seconds']}s, {events['sigkill']} SIGKILLs; lost {result['lost']}, failed {result['failed']}, "
        f"unfinished {result['not_finished']}, duplicates {result['duplicates']} "
        f"({result['duplicate_messages_explained_by_a_kill']} of {result['duplicate_messages']} messages "
        f"explained by a kill); statuses {result['statuses']}"
    )
    return result


def _statuses(db) -> Counter[str]:
    with db.cursor() as cursor:
        cursor.execute("SELECT status, count(*) FROM outbox_worker_outboxmessage GROUP BY status")
        return Counter(dict(cursor.fetchall()))


def _terminate_worker_backends(db) -> int:
    """Cut every connection to the bench database but the driver's own (the workers' claim and LISTEN ones)."""
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]
