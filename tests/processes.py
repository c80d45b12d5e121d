"""Run the real worker command as a separate process against the test database."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from django.core.mail.backends.smtp import EmailBackend as SMTPEmailBackend
from django.db import connection

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the database the tests are using right now (the test database)."""
    s = connection.settings_dict
    password = f":{s['PASSWORD']}" if s["PASSWORD"] else ""
    return f"postgres://{s['USER']}{password}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def worker_env(*, smtp_port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url(),
        EMAIL_URL=f"smtp://127.0.0.1:{smtp_port}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# Every worker a test started, so a failing test cannot leave one running.
STARTED: list[subprocess.Popen] = []


def stop_worker(process: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM a worker (if still running) and return its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


def kill_leftover_workers() -> None:
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def start_worker(*args: str, smtp_port: int, log_path: Path, **extra_env: str) -> subprocess.Popen:
    """Start `manage.py outbox_worker ARGS`; its output goes to `log_path`."""
    log = open(log_path, "ab")  # the child keeps the file; ours closes when garbage-collected
    process = subprocess.Popen(
        [sys.executable, "manage.py", "outbox_worker", *args],
        cwd=PROJECT_ROOT,
        env=worker_env(smtp_port=smtp_port, **extra_env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    STARTED.append(process)
    return process


def wait_until(predicate, *, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout`.

    For conditions only observable in the database or another process; where
    an event can be awaited directly (the SMTP handler's condition), tests do that.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def live_worker_pids() -> set[int]:
    """Pids of the workers with a live heartbeat (the one liveness rule, WorkerHeartbeat.objects.alive())."""
    from outbox_worker.models import WorkerHeartbeat  # the app registry is ready by test time

    return set(WorkerHeartbeat.objects.alive().values_list("pid", flat=True))


def wait_for_live_workers(count: int) -> set[int]:
    """Wait until exactly `count` workers have a live heartbeat; return their pids."""

    def pids() -> set[int] | None:
        alive = live_worker_pids()
        return alive if len(alive) == count else None

    return wait_until(pids, what=f"{count} live workers")


def listener_pids(worker_pid: int) -> set[int]:
    """Backends through which the worker process `worker_pid` LISTENs for the outbox channel.

    Matched by the worker's pid: a listener of an earlier test's worker may
    still be on its way out of pg_stat_activity.
    """
    from django.db import connection as conn

    from outbox_worker.background import listener_application_name

    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [listener_application_name(worker_pid)],
        )
        return {row[0] for row in cursor.fetchall()}


class CrashingEmailBackend(SMTPEmailBackend):
    """Django's SMTP backend that kills its process (`os._exit`) when asked to mail OUTBOX_TEST_CRASH_ON.

    Stands in for a message that crashes the worker (a library bug, memory
    exhaustion): the process really dies mid-send, as with kill -9. Used by
    worker processes through EMAIL_BACKEND=tests.processes.CrashingEmailBackend.
    """

    def send_messages(self, email_messages):
        doomed = os.environ.get("OUTBOX_TEST_CRASH_ON")
        if doomed and any(doomed in message.recipients() for message in email_messages):
            os._exit(70)
        return super().send_messages(email_messages)


def sigterm_during_first_send(smtp_server, worker: subprocess.Popen, *, rows_held: int) -> int:
    """SIGTERM `worker` while its first send waits at the SMTP server's gate; return its exit code.

    Checks first that the worker holds `rows_held` rows (`sending`) at that moment.
    """
    from outbox_worker.models import OutboxMessage, OutboxStatus  # the app registry is ready by test time

    try:
        assert smtp_server.handler.entered.wait(timeout=60)
        assert OutboxMessage.objects.filter(status=OutboxStatus.SENDING).count() == rows_held
        worker.send_signal(signal.SIGTERM)
        smtp_server.handler.gate.set()
        return worker.wait(timeout=60)
    finally:
        smtp_server.handler.gate.set()
        stop_worker(worker)
