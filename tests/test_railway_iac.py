""".railway/railway.ts says what the Procfile, scripts/ and the settings say, so they cannot drift apart."""

import json
import re
import runpy

import pytest
from django.core.management import get_commands
from django.urls import resolve

from backend.health import healthz
from outbox_worker.management.commands.outbox_worker import STOP_MARGIN
from outbox_worker.supervisor import ABORT_GRACE
from tests.child_django import PRODUCTION_ENV, ROOT, clean_env, run_python
from tests.railway_iac import argv, procfile, railway_graph, railway_services


def test_the_project_is_one_postgres_database_and_three_services():
    resources = railway_graph()["resources"]

    assert [(r["type"], r.get("engine")) for r in resources if r["type"] == "database"] == [("database", "postgres")]
    assert sorted(railway_services()) == ["cron", "web", "worker"]
    # All three are built from the same repository.
    assert len({json.dumps(s["source"], sort_keys=True) for s in railway_services().values()}) == 1


def test_web_runs_the_procfile_lines_and_checks_its_health():
    web = railway_services()["web"]

    assert web["deploy"]["startCommand"] == procfile()["web"]
    # gunicorn itself, no shell in between, so Railway's SIGTERM reaches it.
    assert argv(web["deploy"]["startCommand"])[0] == "gunicorn"
    # One command prepares the database: the Procfile's release line.
    assert web["deploy"]["preDeployCommand"] == [procfile()["release"]]
    assert web["build"]["buildCommand"] == "python manage.py collectstatic --noinput"
    assert resolve(web["deploy"]["healthcheckPath"]).func is healthz
    assert web["deploy"]["restartPolicyType"] in {"ON_FAILURE", "NEVER"}  # ALWAYS is not on every plan


def test_local_run_prepares_the_database_with_the_same_command():
    assert procfile()["release"] in (ROOT / "scripts/run").read_text()


def test_web_draining_outlasts_gunicorns_graceful_timeout():
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    web = railway_services()["web"]

    assert web["deploy"]["drainingSeconds"] > config["graceful_timeout"]


PRODUCTION_SEND_BOUNDS = """
import django, json
django.setup()
from django.conf import settings
from outbox_worker.conf import outbox_settings
print(json.dumps({
    "email_timeout": settings.EMAIL_TIMEOUT,
    "send_deadline": getattr(settings, "OUTBOX_SEND_DEADLINE", None),
    "tries": outbox_settings.SEND_TRIES,
    "retry_wait_max": outbox_settings.SEND_RETRY_WAIT[1],
    "finish_within": outbox_settings.FINISH_WITHIN,
}))
"""


def test_worker_draining_covers_finishing_the_message_in_hand():
    # The production defaults, read in a process of their own.
    result = run_python(PRODUCTION_SEND_BOUNDS, clean_env(**PRODUCTION_ENV))
    assert result.returncode == 0, result.stderr
    bounds = json.loads(result.stdout.strip().splitlines()[-1])
    # One send: the send deadline where it exists, else every try at EMAIL_TIMEOUT
    # for each of a few SMTP steps (connect, MAIL, RCPT, DATA) with the waits between.
    send = (
        bounds["send_deadline"]
        or bounds["tries"] * 4 * bounds["email_timeout"] + (bounds["tries"] - 1) * bounds["retry_wait_max"]
    )
    worker = railway_services()["worker"]

    assert worker["deploy"]["startCommand"] == procfile()["worker"]
    assert worker["deploy"]["drainingSeconds"] >= send + bounds["finish_within"]
    # With --processes, the parent waits the send deadline and a margin for its children, then
    # aborts them and kills what is left: all of that fits before Railway's SIGKILL.
    if bounds["send_deadline"]:
        parent_stop = bounds["send_deadline"] + STOP_MARGIN + ABORT_GRACE
        assert worker["deploy"]["drainingSeconds"] >= parent_stop


def test_worker_serves_nothing_and_migrates_nothing():
    deploy = railway_services()["worker"]["deploy"]

    assert "healthcheckPath" not in deploy
    assert "preDeployCommand" not in deploy
    assert "networking" not in railway_services()["worker"]


def test_cron_runs_both_prune_commands_on_a_utc_schedule_and_exits():
    cron = railway_services()["cron"]
    schedule = cron["deploy"]["cronSchedule"]
    script = argv(cron["deploy"]["startCommand"])

    assert len(schedule.split()) == 5, schedule
    assert script[0] == "sh" and (ROOT / script[1]).is_file()
    commands = [
        argv(line)[2] for line in (ROOT / script[1]).read_text().splitlines() if line.startswith("python manage.py ")
    ]
    assert commands == ["outbox_prune", "prune_idempotency_keys"]
    assert set(commands) <= set(get_commands())
    # A cron service must exit; a failed run is not restarted in a loop.
    assert cron["deploy"]["restartPolicyType"] == "NEVER"
    assert "healthcheckPath" not in cron["deploy"]


@pytest.mark.parametrize("name", ["web", "worker", "cron"])
def test_every_service_reads_the_database_by_reference(name):
    assert railway_services()[name]["variables"]["DATABASE_URL"] == {
        "type": "reference",
        "resource": "database.Postgres",
        "output": "DATABASE_URL",
    }


SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|API_KEY|EMAIL_URL")


@pytest.mark.parametrize("name", ["web", "worker", "cron"])
def test_no_secret_is_written_in_the_file(name):
    for variable, value in railway_services()[name]["variables"].items():
        assert value["type"] in {"reference", "preserve", "literal"}, variable
        if SECRET_NAME.search(variable):
            assert value["type"] in {"reference", "preserve"}, f"{name}.{variable} holds a literal secret"


def test_worker_and_cron_share_webs_secret_key():
    for name in ("worker", "cron"):
        assert railway_services()[name]["variables"]["SECRET_KEY"] == {
            "type": "reference",
            "resource": "service.web",
            "output": "SECRET_KEY",
        }


def test_the_railway_package_is_pinned_exactly():
    package = json.loads((ROOT / ".railway/package.json").read_text())
    lock = json.loads((ROOT / ".railway/package-lock.json").read_text())

    assert re.fullmatch(r"\d+\.\d+\.\d+", package["dependencies"]["railway"])
    assert lock["packages"]["node_modules/railway"]["version"] == package["dependencies"]["railway"]


def test_no_config_as_code_file_is_left_to_look_alive():
    assert not list(ROOT.glob("railway.json")) + list(ROOT.glob("railway.toml")) + list(ROOT.glob("deploy/*.json"))


def test_web_keeps_the_webhook_secret_set_in_railway():
    # Delivery events reach web only; the secret is set in Railway and never written here.
    assert railway_services()["web"]["variables"]["ANYMAIL_WEBHOOK_SECRET"] == {"type": "preserve"}
    assert "ANYMAIL_WEBHOOK_SECRET" not in railway_services()["worker"]["variables"]
