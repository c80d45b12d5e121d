"""Our project's real settings, pointed at the benchmark's own database and sink.

Only the urlconf differs: it adds the synchronous-send view that benchmark 1
compares against (it exists only here, never in the product).
"""

import os

os.environ.setdefault("SECRET_KEY", "bench-only-not-secret")
os.environ.setdefault(
    "DATABASE_URL", os.environ.get("BENCH_OURS_DB_URL", "postgres://root@127.0.0.1:5432/bench_outbox")
)
os.environ.setdefault("EMAIL_URL", f"smtp://127.0.0.1:{os.environ.get('BENCH_SMTP_PORT', '2525')}")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
# gunicorn is reached over plain HTTP on 127.0.0.1, with no TLS-terminating
# proxy in front: production's redirect to HTTPS would answer every request 301.
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
# The per-client enrollment throttle (20/min by default) would turn the load of
# benchmarks 1 and 2h, all from 127.0.0.1, into 429s; it is not what they measure.
os.environ.setdefault("ENROLLMENT_THROTTLE_RATE", "")

from backend.settings import *  # noqa: F403

ROOT_URLCONF = "bench.oursite.urls"

# Benchmark 7 times the claim query on two extra databases side by side.
_base = DATABASES["default"]  # noqa: F405
for _alias, _name in (("claim_small", "bench_claim_small"), ("claim_big", "bench_claim_big")):
    DATABASES[_alias] = {**_base, "NAME": _name}  # noqa: F405
