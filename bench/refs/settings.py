"""Settings for the reference mail queues (django-post-office, django-mailer).

The project's settings plus the two apps, on their own database, sending to
the same kind of local sink. Only the benchmark environment has these apps.
"""

import os

os.environ.setdefault("SECRET_KEY", "bench-only-not-secret")
os.environ.setdefault("DATABASE_URL", os.environ.get("BENCH_REFS_DB_URL", "postgres://root@127.0.0.1:5432/bench_refs"))
os.environ.setdefault("EMAIL_URL", f"smtp://127.0.0.1:{os.environ.get('BENCH_SMTP_PORT', '2525')}")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")

from backend.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "post_office", "mailer"]  # noqa: F405

# post-office: defaults (5 threads per process, batches of 100), real SMTP backend.
POST_OFFICE = {"BACKENDS": {"default": "django.core.mail.backends.smtp.EmailBackend"}}
# django-mailer: its own backend setting; the lock file keeps one sender at a time (its default).
MAILER_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
MAILER_LOCK_PATH = os.environ.get("BENCH_MAILER_LOCK", "/tmp/bench_mailer")
# runmailer_pg's safety-net poll; NOTIFY does the real work.
MAILER_EMPTY_QUEUE_SLEEP = 30
