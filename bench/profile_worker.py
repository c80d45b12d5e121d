"""Where the worker's time goes: py-spy samples one `outbox_worker --once` drain.

`bench/run profile` seeds the outbox, drains it under `py-spy record --idle`
(waiting on the database or on SMTP counts too) and sums the samples by the
parts of a delivery. Output: bench/results/profile.json and the raw folded
stacks in bench/logs/profile.folded.
"""

import subprocess
from collections import Counter
from pathlib import Path

from bench import common
from bench.common import OURS, Sink, child_env, log, manage_cmd, task

# Threads beside the sender (lease keeper, LISTEN) mostly wait: with `--idle` they would add
# their whole lifetime to the total, so their samples are counted apart and left out of the shares.
BACKGROUND = ("LeaseKeeper.run (", "NotificationListener.run (")

# A sample goes to the first part whose test matches its stack (frames joined by ";").
PARTS = [
    ("start-up and shut-down (imports, checks)", lambda st: "OutboxWorker.run (" not in st),
    ("claim (UPDATE … RETURNING + COMMIT, one per batch)", lambda st: "outbox_claim_batch (" in st),
    ("finish: COMMIT (one per group of outcomes)", lambda st: "OutboxWorker._write (" in st and ".commit (" in st),
    (
        "finish: UPDATE to sent (one per group)",
        lambda st: "OutboxWorker._write (" in st and "QuerySet.update (" in st,
    ),
    (
        "finish: INSERT attempts (one bulk INSERT per group)",
        lambda st: "OutboxWorker._write (" in st and "bulk_create (" in st,
    ),
    ("logging", lambda st: "Logger." in st),
    ("finish: other", lambda st: "OutboxWorker._write (" in st),
    ("SMTP connect + greeting + EHLO", lambda st: "EmailBackend.open (" in st),
    ("SMTP QUIT + close", lambda st: "EmailBackend.close (" in st),
    ("SMTP MAIL/RCPT/DATA", lambda st: "SMTP.sendmail (" in st),
    (
        "build the MIME message",
        lambda st: any(
            f in st for f in ("EmailMessage.message (", "as_bytes (", "build_email (", "sanitize_address (")
        ),
    ),
    ("tenacity / retry bookkeeping", lambda st: "tenacity" in st),
]


def main(count: int = 3000, worker_flags: list[str] = ()) -> dict:
    task(OURS, "seed-ours", str(count))
    folded = common.LOGS / "profile.folded"
    spy = str(Path(common.PY).parent / "py-spy")
    with Sink("profile") as sink:
        argv = [spy, "record", "--idle", "--rate", "250", "--format", "raw", "-o", str(folded), "--"]
        argv += manage_cmd("outbox_worker", "--once", *worker_flags)
        proc = subprocess.run(argv, cwd=common.ROOT, env=child_env(OURS, sink.port), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        sink.poll()
        delivered = len(sink.accepts)
        connections = sink.connections
    totals: Counter[str] = Counter()
    all_samples = 0
    background = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        n = int(n)
        if any(frame in stack for frame in BACKGROUND):
            background += n
            continue
        all_samples += n
        for label, test in PARTS:
            if test(stack):
                totals[label] += n
                break
        else:
            totals["other"] += n
    shares = {label: round(100 * n / all_samples, 1) for label, n in totals.most_common()}
    log(f"profile: {delivered} emails over {connections} SMTP connections; share of wall time by part:")
    for label, share in shares.items():
        log(f"  {share:5.1f}%  {label}")
    log(f"  (left out: {background} samples of the lease-keeper / LISTEN threads, {all_samples} counted)")
    return {
        "emails": count,
        "delivered": delivered,
        "smtp_connections": connections,
        "share_percent": shares,
        "samples_counted": all_samples,
        "samples_background_threads": background,
    }
