"""Settings for the tasks benchmark: the project's settings, one Django Tasks backend per side.

BENCH_TASKS_SIDE=ours: outbox_worker.tasks.OutboxBackend on bench_tasks_ours, run by `outbox_worker`.
BENCH_TASKS_SIDE=ref: django-tasks-db's DatabaseBackend on bench_tasks_ref, run by its `db_worker`.
Each side has its own database, so neither sees the other's rows or load.
"""

import os

SIDE = os.environ.get("BENCH_TASKS_SIDE", "ours")
_PG = os.environ.get("BENCH_PG_URL", "postgres://root@127.0.0.1:5432").rstrip("/")
os.environ.setdefault("SECRET_KEY", "bench-only-not-secret")
os.environ["DATABASE_URL"] = f"{_PG}/bench_tasks_{SIDE}"
os.environ.setdefault("EMAIL_URL", "smtp://127.0.0.1:1")  # no email is sent in this benchmark
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")

from backend.settings import *  # noqa: E402, F403

if SIDE == "ref":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]  # noqa: F405
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": []}}
else:
    TASKS = {"default": {"BACKEND": "outbox_worker.tasks.OutboxBackend", "QUEUES": []}}
