"""outbox_worker as a second project sees it: built into a wheel, installed into a fresh venv, used for real.

The venv holds the wheel, Django and psycopg 3 only (tests/example_project/constraints.txt): no psycopg2 and
none of this repository, so a module the wheel forgot, a template left out or a driver imported at module level
fails here. The project's commands and its worker run as real processes against PostgreSQL and the test's SMTP
server. Building and installing takes about 15-30 s with pip's cache (PyPI is needed the first time).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.db import connection

from tests.processes import PROJECT_ROOT, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

EXAMPLE = PROJECT_ROOT / "tests" / "example_project"
NOT_SOURCE = shutil.ignore_patterns("__pycache__")


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of what it is made of, so the build leaves nothing in the work tree."""
    root = tmp_path_factory.mktemp("build")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    shutil.copytree(PROJECT_ROOT / "outbox_worker", root / "outbox_worker", ignore=NOT_SOURCE)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", root / "dist",
        root)  # fmt: skip
    [built] = (root / "dist").glob("outbox_worker-*.whl")
    return built


@pytest.fixture(scope="module")
def shop(tmp_path_factory, wheel) -> Path:
    """A fresh venv with the wheel installed, and a copy of the example project; return the project folder."""
    root = tmp_path_factory.mktemp("shop")
    run(sys.executable, "-m", "venv", root / "venv")
    run(root / "venv/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
        "-c", EXAMPLE / "constraints.txt", f"{wheel}[psycopg-binary]")  # fmt: skip
    shutil.copytree(EXAMPLE, root / "project", ignore=NOT_SOURCE)
    return root / "project"


@pytest.fixture
def shop_database():
    """A database of the shop's own beside the test database, dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_shop"
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    s = connection.settings_dict
    yield name, f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{name}"
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def shop_env(shop_database, smtp_server) -> dict[str, str]:
    """The shop's environment: nothing of this project's (no DJANGO_SETTINGS_MODULE, no PYTHONPATH)."""
    _name, url = shop_database
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": url,
        "EMAIL_PORT": str(smtp_server.port),
        "PYTHONUNBUFFERED": "1",
    }


def manage(shop: Path, env: dict[str, str], *args: str) -> str:
    return run(shop.parent / "venv/bin/python", "manage.py", *args, cwd=shop, env=env)


def start_shop_worker(shop: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    # An hour between polls: only LISTEN/NOTIFY (here on psycopg 3) can explain a prompt delivery.
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [shop.parent / "venv/bin/python", "manage.py", "outbox_worker", "--poll-interval", "3600"],
            cwd=shop, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_for_listener(database: str, worker: subprocess.Popen) -> None:
    def listening() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                [database, f"outbox_worker_listener:{worker.pid}"],
            )
            return cursor.fetchone() is not None

    wait_until(lambda: listening() or worker.poll() is not None, what="the shop's worker to LISTEN")
    assert worker.poll() is None, "the shop's worker exited"


def stop(worker: subprocess.Popen) -> int:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    return worker.wait(timeout=60)


def test_the_wheel_carries_the_templates_migrations_and_commands_and_none_of_the_project(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "outbox_worker/templates/admin/outbox_worker/outboxmessage/change_list.html" in names
    assert "outbox_worker/migrations/0001_initial.py" in names
    assert "outbox_worker/management/commands/outbox_worker.py" in names
    assert not [n for n in names if n.startswith(("backend/", "tests/", "bench/")) or "__pycache__" in n]


def test_a_project_that_installed_the_wheel_sends_an_email_through_its_worker_and_sees_it_in_the_admin(
    shop, shop_env, shop_database, smtp_server, tmp_path
):
    manage(shop, shop_env, "migrate", "--noinput")
    origin = json.loads(manage(shop, shop_env, "where_from"))
    venv = str(shop.parent / "venv")
    assert origin["package"].startswith(venv), origin
    assert origin["template"].startswith(venv), origin
    assert origin["driver"] == "psycopg", origin

    worker = start_shop_worker(shop, shop_env, tmp_path / "worker.log")
    try:
        wait_for_listener(shop_database[0], worker)
        queued = json.loads(manage(shop, shop_env, "place_order", "--email", "ana@example.com", "--order", "7"))
        [received] = smtp_server.handler.wait_for(1)
    finally:
        assert stop(worker) == 0, (tmp_path / "worker.log").read_text()
    assert received.rcpt_tos == ["ana@example.com"]
    assert received.message["Subject"] == "Your order 7"
    log = (tmp_path / "worker.log").read_text()
    assert f"outbox.delivery id={queued['message_id']} attempt=1 outcome=sent" in log
    assert re.search(r"^outbox\.listen_connected .*driver=psycopg$", log, re.MULTILINE), log

    page = manage(shop, shop_env, "shell", "--no-imports", "-c", ADMIN_PAGE)
    assert json.loads(page) == {"status": 200, "lists_the_email": True}


# Renders the outbox admin's list as a logged-in superuser would see it.
ADMIN_PAGE = """
import json
from django.contrib.auth.models import User
from django.test import Client
client = Client()
client.force_login(User.objects.create_superuser("admin", "admin@example.com", "x"))
response = client.get("/admin/outbox_worker/outboxmessage/")
print(json.dumps({"status": response.status_code, "lists_the_email": "Your order 7" in response.text}))
"""


def test_a_project_that_installed_the_wheel_runs_a_task_through_the_outbox(
    shop, shop_env, shop_database, smtp_server, tmp_path
):
    manage(shop, shop_env, "migrate", "--noinput")
    worker = start_shop_worker(shop, shop_env, tmp_path / "worker.log")
    try:
        wait_for_listener(shop_database[0], worker)
        queued = json.loads(manage(shop, shop_env, "place_order", "--email", "bia@example.com"))
        assert queued["task_id"], queued
        result = wait_until(
            lambda: (
                (r := json.loads(manage(shop, shop_env, "task_result", queued["task_id"])))["status"]
                in ("SUCCESSFUL", "FAILED")
                and r
            ),
            what="the task to finish",
        )
        smtp_server.handler.wait_for(1)
    finally:
        assert stop(worker) == 0, (tmp_path / "worker.log").read_text()
    assert result == {"status": "SUCCESSFUL", "return_value": 3}
