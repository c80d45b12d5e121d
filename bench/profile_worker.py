"""Where the worker's time goes: py-spy samples one `outbox_worker --once` drain.

`bench/run profile` seeds the outbox, drains it under `py-spy record --idle`
(waiting on the database or on SMTP counts too) and sums the samples by the
parts of a delivery. Output: bench/results/profile.json and the raw folded
stacks in bench/logs/profile.folded.

A second drain on the MTA-like sink is sampled without `--idle` (CPU only) and
reported as microseconds of CPU per email for the functions that cost the most
(`cpu_per_email_us`): what a cut in the hot path would save. A third, at the default
`--concurrency` under `py-spy --gil`, counts only the thread holding the GIL
(`gil_per_email_us`): the sender threads share one core, so that is what a cut buys them.
"""

import subprocess
from collections import Counter
from pathlib import Path

from bench import common
from bench.common import OURS, Sink, child_env, log, manage_cmd, task

# Threads beside the sender (lease keeper, LISTEN) mostly wait: with `--idle` they would add
# their whole lifetime to the total, so their samples are counted apart and left out of the shares.
BACKGROUND = ("Keeper.run (", "NotificationListener.run (")

# A sample goes to the first part whose test matches its stack (frames joined by ";").
PARTS = [
    ("start-up and shut-down (imports, checks)", lambda st: "OutboxWorker.run (" not in st),
    ("claim (one per batch, into the backlog)", lambda st: "outbox_claim_batch (" in st),
    (
        "write outcomes + mark the next group started (one statement per group)",
        lambda st: "OutcomeBook.mark_started (" in st or "OutcomeBook.flush (" in st,
    ),
    ("logging", lambda st: "log_event (" in st or "Logger." in st),
    ("SMTP connect + greeting + EHLO", lambda st: "EmailBackend.open (" in st),
    ("SMTP QUIT + close", lambda st: "EmailBackend.close (" in st),
    ("SMTP MAIL/RCPT/DATA", lambda st: "SMTP.sendmail (" in st),
    (
        "build the email (wire bytes, or Django's build + verify)",
        lambda st: "build_email (" in st or "wire_email (" in st,
    ),
    ("envelope addresses (sanitize_address)", lambda st: "sanitize_address (" in st),
    ("tenacity / retry bookkeeping", lambda st: "tenacity" in st),
]


# One sender thread, whatever the default: the shares and the microseconds per email are then
# one email's cost, not threads waiting for the GIL.
SEQUENTIAL = ["--concurrency", "1"]

# The functions the CPU profile reports (inclusive time), by the name py-spy gives them.
CPU_FUNCTIONS = [
    "OutboxWorker.process_batch",
    "deliver",
    "build_email",
    "wire_email",
    "EmailMessage.message",
    "MIMEMixin.as_bytes",
    "verify_headers",
    "send_email",
    "sanitize_address",
    "SMTP.sendmail",
    "SocketIO.readinto",
    "OutcomeBook.mark_started",
    "outbox_finish",
    "outbox_claim_batch",
    "log_event",
    "BaseRetrying.__iter__",
]


def cpu_profile(count: int, worker_flags: list[str], *, gil: bool = False) -> dict:
    """CPU microseconds per email spent in (and under) each of CPU_FUNCTIONS, one drain on the MTA-like sink.

    With `gil`: the worker at its default --concurrency, sampling only the thread holding the GIL
    (`py-spy --gil`): what each part costs the one core the sender threads share.
    """
    from bench.sink import MTA_ACCEPT_DELAY

    rate = 500
    task(OURS, "seed-ours", str(count))
    name = "profile-gil" if gil else "profile-cpu"
    folded = common.LOGS / f"{name}.folded"
    spy = str(Path(common.PY).parent / "py-spy")
    with Sink(name, accept_delay=MTA_ACCEPT_DELAY) as sink:
        argv = [spy, "record", *(["--gil"] if gil else []), "--rate", str(rate), "--format", "raw", "-o", str(folded)]
        argv += ["--", *manage_cmd("outbox_worker", "--once", *([] if gil else SEQUENTIAL), *worker_flags)]
        proc = subprocess.run(argv, cwd=common.ROOT, env=child_env(OURS, sink.port), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
    inclusive: Counter[str] = Counter()
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if any(frame in stack for frame in BACKGROUND) or "OutboxWorker._sender_loop (" not in stack:
            continue
        names = {frame.split(" (")[0] for frame in stack.split(";")}
        for name in CPU_FUNCTIONS:
            if name in names:
                inclusive[name] += int(n)
    per_email = {name: round(inclusive[name] / rate / count * 1e6) for name in CPU_FUNCTIONS}
    log(f"profile ({'GIL, default --concurrency' if gil else 'CPU'}, MTA-like sink): microseconds per email, inclusive")
    for name, us in sorted(per_email.items(), key=lambda item: -item[1]):
        log(f"  {us:6d} us  {name}")
    return per_email


def main(count: int = 3000, worker_flags: list[str] = ()) -> dict:
    task(OURS, "seed-ours", str(count))
    folded = common.LOGS / "profile.folded"
    spy = str(Path(common.PY).parent / "py-spy")
    with Sink("profile") as sink:
        argv = [spy, "record", "--idle", "--rate", "250", "--format", "raw", "-o", str(folded), "--"]
        argv += manage_cmd("outbox_worker", "--once", *SEQUENTIAL, *worker_flags)
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
        "cpu_per_email_us": cpu_profile(count, list(worker_flags)),
        "gil_per_email_us": cpu_profile(count, list(worker_flags), gil=True),
    }
