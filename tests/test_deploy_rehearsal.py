"""A Railway deploy, rehearsed with real processes on a fresh checkout and a fresh database.

What Railway does with a new project, in order: install requirements.txt into
a clean environment; run web's build command with RAILWAY_ENVIRONMENT_ID set
and none of the service's variables; run the pre-deploy command; start web,
worker and (on schedule) cron with the start commands .railway/railway.ts
declares. The commands are read from the evaluated IaC, never written here.
"""

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings

from tests.child_django import ROOT, clean_env, free_port, http
from tests.processes import wait_until
from tests.railway_iac import railway_services
from tests.smtp import SMTPServer

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

PUBLIC_DOMAIN = "cursos.up.railway.app"
# What Railpack installs; pip's cache keeps repeat runs short.
REQUIREMENTS = ["-r", "requirements.txt"]


def checkout(target: Path) -> Path:
    """Copy what git would hand Railway (tracked and new, unignored files): no .venv, no node_modules."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture
def fresh_database():
    """A database of its own, empty: the pre-deploy command must build everything in it."""
    db = settings.DATABASES["default"]
    name = f"{db['NAME']}_rehearsal"
    admin = psycopg2.connect(
        dbname="postgres", user=db["USER"], password=db["PASSWORD"], host=db["HOST"], port=db["PORT"] or 5432
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    yield f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def run(command: str, *, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a Railway command line the way its container would: a plain exec, or `sh` for a script."""
    return subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def start(command: str, *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(shlex.split(command), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def outbox_statuses(database_url: str) -> list[str]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT status FROM outbox_worker_outboxmessage ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def literal_variables(service: dict) -> dict[str, str]:
    return {k: v["value"] for k, v in service.get("variables", {}).items() if v["type"] == "literal"}


def test_a_fresh_railway_deploy_builds_migrates_serves_delivers_and_stops_cleanly(tmp_path, fresh_database):
    services = railway_services()
    web, worker, cron = services["web"], services["worker"], services["cron"]
    app = checkout(tmp_path / "app")

    # Railpack: a clean Python environment with requirements.txt only.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [venv / "bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    base = clean_env(PATH=f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", RAILWAY_ENVIRONMENT_ID="rehearsal")
    base.pop("VIRTUAL_ENV", None)

    # Build: RAILWAY_ENVIRONMENT_ID is set (production settings), no variables yet.
    built = run(web["build"]["buildCommand"], cwd=app, env=base)
    assert built.returncode == 0, built.stdout + built.stderr
    assert (app / "staticfiles/admin").is_dir()

    smtp = SMTPServer().start()
    secret = "rehearsal-" + "k" * 50
    runtime = {
        **base,
        # What Railway resolves: the IaC's literals and references, Railway's own
        # variables, and the secrets an operator sets.
        "DATABASE_URL": fresh_database,
        "SECRET_KEY": secret,
        "RAILWAY_PUBLIC_DOMAIN": PUBLIC_DOMAIN,
        "EMAIL_URL": smtp.url,
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("web", "worker")}
    processes: dict[str, subprocess.Popen] = {}
    try:
        # Pre-deploy: one command prepares an empty database.
        for command in web["deploy"]["preDeployCommand"]:
            done = run(command, cwd=app, env={**runtime, **literal_variables(web)})
            assert done.returncode == 0, done.stdout + done.stderr
        # A one-off command (railway ssh) for the demo products.
        seeded = run("python manage.py seed_demo", cwd=app, env=runtime)
        assert seeded.returncode == 0, seeded.stderr

        processes["web"] = start(
            web["deploy"]["startCommand"],
            cwd=app,
            env={**runtime, **literal_variables(web), "PORT": str(port)},
            log=logs["web"],
        )
        processes["worker"] = start(
            worker["deploy"]["startCommand"], cwd=app, env={**runtime, **literal_variables(worker)}, log=logs["worker"]
        )

        # Railway's healthcheck: plain HTTP, its own Host header.
        wait_until(
            lambda: (
                http("GET", web["deploy"]["healthcheckPath"], port, Host="healthcheck.railway.app")[0] == 200
                or processes["web"].poll() is not None
            ),
            timeout=120,
            what="the healthcheck",
        )
        assert processes["web"].poll() is None, logs["web"].read_text()

        # One enrollment through Railway's proxy: TLS ended, the client in X-Real-IP.
        status, _, body = http(
            "POST",
            "/api/enrollments/",
            port,
            {"product": 1, "name": "Ana Souza", "email": "ana@example.com"},
            Host=PUBLIC_DOMAIN,
            **{"X-Forwarded-Proto": "https", "X-Real-IP": "203.0.113.7"},
        )
        assert status == 201, (body, logs["web"].read_text())
        [received] = smtp.handler.wait_for(1, timeout=120)
        assert received.rcpt_tos == ["ana@example.com"]

        # A redeploy: SIGTERM, and each must be done within its draining seconds.
        for name, service in (("web", web), ("worker", worker)):
            processes[name].send_signal(signal.SIGTERM)
            code = processes[name].wait(timeout=service["deploy"]["drainingSeconds"])
            assert code == 0, logs[name].read_text()
        assert outbox_statuses(fresh_database) == ["sent"]

        # The cron service's run: prunes, then exits 0.
        pruned = run(cron["deploy"]["startCommand"], cwd=app, env={**runtime, **literal_variables(cron)})
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        smtp.stop()
    assert secret not in logs["web"].read_text() + logs["worker"].read_text()
