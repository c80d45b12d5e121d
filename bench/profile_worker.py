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

# (label, substring of a frame) in priority order: a sample is counted under the
# first label whose frame appears in its stack.
BUCKETS = [
    ("claim (UPDATE … RETURNING, commit)", "outbox_claim_batch"),
    ("SMTP connect + EHLO (per message)", "smtplib.py:connect"),
    ("SMTP connect + EHLO (per message)", " (smtplib.py:"),
    ("SMTP close/QUIT (per message)", "close (django/core/mail/backends/smtp.py"),
    ("SMTP MAIL/RCPT/DATA", "sendmail (smtplib.py"),
    ("build MIME message", "message (django/core/mail/message.py"),
    ("build MIME message", "build_email"),
    ("finish: UPDATE + INSERT attempt + commit (per message)", "_finish (outbox_worker/worker.py"),
    ("logging", "logging/__init__.py"),
    ("tenacity / retry bookkeeping", "tenacity"),
    ("Django start-up, imports", "<module>"),
]


def main(count: int = 3000) -> dict:
    task(OURS, "seed-ours", str(count))
    folded = common.LOGS / "profile.folded"
    spy = str(Path(common.PY).parent / "py-spy")
    with Sink("profile") as sink:
        argv = [spy, "record", "--idle", "--rate", "250", "--format", "raw", "-o", str(folded), "--"]
        argv += manage_cmd("outbox_worker", "--once")
        proc = subprocess.run(argv, cwd=common.ROOT, env=child_env(OURS, sink.port), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        sink.poll()
        delivered = len(sink.accepts)
        connections = sink.connections
    totals: Counter[str] = Counter()
    all_samples = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        n = int(n)
        all_samples += n
        for label, needle in BUCKETS:
            if needle in stack:
                totals[label] += n
                break
        else:
            totals["other"] += n
    shares = {label: round(100 * n / all_samples, 1) for label, n in totals.most_common()}
    log(f"profile: {delivered} emails over {connections} SMTP connections; share of wall time by part:")
    for label, share in shares.items():
        log(f"  {share:5.1f}%  {label}")
    return {"emails": count, "delivered": delivered, "smtp_connections": connections, "share_percent": shares}
