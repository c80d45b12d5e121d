"""Production-like end to end: the Procfile's web and worker lines as real processes.

gunicorn with the real gunicorn.conf.py and the worker command, both with a
production environment (DEBUG off, HTTPS behind a proxy, JSON logs), on the
test PostgreSQL database, delivering to a real SMTP server.
"""

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from outbox_worker.models import OutboxMessage, OutboxStatus
from tests.child_django import ROOT, free_port, http
from tests.factories import make_product
from tests.processes import database_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: shlex.split(command) for name, command in (line.split(":", 1) for line in lines if ":" in line)}


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # The Procfile says "gunicorn" and "python": the ones of this virtualenv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    executable = sys.executable if argv[0] == "python" else shutil.which(argv[0], path=path)
    with open(log, "wb") as out:
        return subprocess.Popen([executable, *argv[1:]], cwd=ROOT, env={**env, "PATH": path}, stdout=out, stderr=out)


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Block until something accepts connections on `port` (or the process died)."""
    gave_up = threading.Event()
    threading.Timer(timeout, gave_up.set).start()
    while not gave_up.is_set():
        assert process.poll() is None, log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                gave_up.set()
                return
        except OSError:
            gave_up.wait(0.05)
    pytest.fail(f"nothing listened on {port}:\n{log.read_text()}")


def stop(process: subprocess.Popen, timeout: float = 60) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


def json_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_procfile_web_and_worker_enroll_and_deliver_then_stop_cleanly(smtp_server, tmp_path):
    product = make_product(name="Django na Prática")
    port = free_port()
    secret = secrets.token_urlsafe(50)
    static_root = tmp_path / "static"
    static_root.mkdir()  # collectstatic's output at build time; whitenoise wants it to exist
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "DEBUG": "false",
        "SECRET_KEY": secret,
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url(),
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_server.port}",
        "STATIC_ROOT": str(static_root),
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "LOG_FORMAT": "json",
        "OUTBOX_POLL_INTERVAL": "0.2",
        "ENROLLMENT_THROTTLE_RATE": "3/min",
        # As on Railway: the client is the address its proxy reports.
        "CLIENT_ADDRESS_FROM": "railway",
        "PYTHONUNBUFFERED": "1",
    }
    commands = procfile()
    web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
    web = start(commands["web"], env, web_log)
    worker = start(commands["worker"], env, worker_log)
    try:
        wait_for_port(port, web, web_log)

        # As Railway's proxy forwards it: https already terminated, client address appended.
        status, headers, body = http(
            "POST",
            "/api/enrollments/",
            port,
            {"product": product.pk, "name": "Ana Souza", "email": "Ana@Example.com"},
            **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7", "X-Request-ID": "e2e-pedido-1"},
        )
        assert status == 201, body
        enrollment_id = body["id"]
        assert headers["X-Request-ID"] == "e2e-pedido-1"
        assert "max-age" in headers["Strict-Transport-Security"]

        [received] = smtp_server.handler.wait_for(1)
        assert received.rcpt_tos == ["ana@example.com"]
        assert "Django na Pr" in received.message["Subject"] or "Django_na_Pr" in received.message["Subject"]

        # The throttle counts in one database table, so two gunicorn workers
        # share one budget per client: the 4th request is refused whichever
        # worker gets it.
        statuses = [
            http(
                "POST",
                "/api/enrollments/",
                port,
                {"product": product.pk, "name": "Bia", "email": f"bia{i}@example.com"},
                **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.20"},
            )
            for i in range(4)
        ]
        assert [status for status, _, _ in statuses] == [201, 201, 201, 429]
        assert int(statuses[-1][1]["Retry-After"]) > 0

        # Railway's healthcheck: plain http, its own Host header, no redirect.
        status, _, health = http("GET", "/healthz", port, Host="healthcheck.railway.app")
        assert (status, health) == (200, {"status": "ok"})
    finally:
        web_code = stop(web)
        worker_code = stop(worker)

    assert worker_code == 0, worker_log.read_text()
    assert web_code == 0, web_log.read_text()
    message = OutboxMessage.objects.get(source=f"enrollments.enrollment:{enrollment_id}")
    assert message.status == OutboxStatus.SENT

    # Every line either process wrote is one JSON object; none holds the secret.
    web_lines, worker_lines = json_lines(web_log), json_lines(worker_log)
    assert secret not in web_log.read_text() + worker_log.read_text()
    # Fields are typed values from log_event(), not strings parsed out of the text.
    assert any(
        line.get("request_id") == "e2e-pedido-1" and line.get("message_id") == message.pk for line in web_lines
    ), web_log.read_text()
    assert any(line["logger"] == "gunicorn.access" and line["request_id"] == "e2e-pedido-1" for line in web_lines)
    assert any(
        # The worker's delivery line for this message, whatever the event is called.
        # (The text fallback is for worker.py lines not yet converted to log_event on this branch.)
        (line.get("message_id") == message.pk or f"id={message.pk} " in line["message"]) and "sent" in line["message"]
        for line in worker_lines
    ), worker_log.read_text()
