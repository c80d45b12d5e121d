"""Production settings, each checked in a fresh process with a Railway-like environment."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.child_django import PRODUCTION_ENV, ROOT, clean_env, run_manage, run_python


def test_check_deploy_reports_nothing_with_production_settings():
    result = run_manage("check", "--deploy", "--fail-level", "DEBUG", env=clean_env(**PRODUCTION_ENV))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY must be set"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS must list"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS must list"),
        # DEBUG left on in a Railway service.
        ({"DEBUG": "true", "RAILWAY_ENVIRONMENT_ID": "0b1c2d3e"}, "DEBUG must be off"),
        ({"DEBUG": "true", "PRODUCTION": "true"}, "DEBUG must be off"),
        ({"ENROLLMENT_THROTTLE_RATE": "muitos"}, "ENROLLMENT_THROTTLE_RATE must look like"),
    ],
)
def test_production_refuses_to_start_misconfigured(overrides, complaint):
    result = run_manage("check", env=clean_env(**{**PRODUCTION_ENV, **overrides}))

    assert result.returncode != 0
    assert complaint in result.stderr
    assert PRODUCTION_ENV["SECRET_KEY"] not in result.stdout + result.stderr


def test_development_needs_no_configuration_at_all(tmp_path):
    # What ./scripts/run does: DEBUG=true and nothing else.
    result = run_manage("check", env=clean_env(DEBUG="true", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}"))

    assert result.returncode == 0, result.stderr


ASK = """
import django, json
django.setup()
from django.test import Client
out = {}
c = Client()
r = c.get("/api/products/", HTTP_HOST="cursos.up.railway.app")
out["http"] = [r.status_code, r.get("Location")]
r = c.get("/api/products/", HTTP_HOST="cursos.up.railway.app", HTTP_X_FORWARDED_PROTO="https")
out["https"] = [r.status_code, r.get("Strict-Transport-Security")]
r = c.get("/api/products/", HTTP_HOST="evil.example", HTTP_X_FORWARDED_PROTO="https")
out["bad_host"] = [r.status_code, r["Content-Type"]]
from django.conf import settings
out["cookies"] = [settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE]
print(json.dumps(out))
"""


def test_production_redirects_to_https_and_sends_hsts_behind_railways_proxy(tmp_path):
    env = clean_env(**{**PRODUCTION_ENV, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"})
    assert run_manage("migrate", "--noinput", env=env).returncode == 0

    result = run_python(ASK, env)

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["http"] == [301, "https://cursos.up.railway.app/api/products/"]
    assert answer["https"][0] == 200
    assert answer["https"][1].startswith("max-age=31536000")
    assert answer["bad_host"] == [400, "application/json"]
    assert answer["cookies"] == [True, True]


def test_anymail_settings_come_from_anymail_variables():
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps([settings.EMAIL_BACKEND, settings.ANYMAIL]))"
    )
    env = clean_env(
        **PRODUCTION_ENV,
        EMAIL_BACKEND="anymail.backends.postmark.EmailBackend",
        ANYMAIL_POSTMARK_SERVER_TOKEN="tok",
        ANYMAIL_POSTMARK_API_URL="http://127.0.0.1:9/",
    )

    result = run_python(code, env)

    assert result.returncode == 0, result.stderr
    backend, anymail = json.loads(result.stdout.strip().splitlines()[-1])
    assert backend == "anymail.backends.postmark.EmailBackend"
    # Without ANYMAIL_WEBHOOK_SECRET, an unguessable one refuses every delivery webhook.
    assert anymail.pop("WEBHOOK_SECRET").startswith("unset:")
    assert anymail == {"POSTMARK_SERVER_TOKEN": "tok", "POSTMARK_API_URL": "http://127.0.0.1:9/"}


# --- missing production settings: reported by the process that needs them -----------

RAILWAY_FRESH = {"RAILWAY_ENVIRONMENT_ID": "0b1c2d3e", "DJANGO_SETTINGS_MODULE": "backend.settings"}


def test_a_command_without_its_production_settings_says_so_in_one_line():
    result = run_manage("outbox_status", env=clean_env(**RAILWAY_FRESH))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert "SECRET_KEY must be set" in line and "DATABASE_URL must be set" in line


def test_the_build_step_needs_no_variables(tmp_path):
    # What Railway's build runs for web, before a new service has any variables.
    result = run_manage("collectstatic", "--noinput", env=clean_env(**RAILWAY_FRESH, STATIC_ROOT=str(tmp_path)))

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "admin").is_dir()


WHO_NEEDS_WHAT = """
import json, django
django.setup()
from django.conf import settings
from backend.startup import production_config_errors
print(json.dumps({
    "worker": production_config_errors(serves_http=False),
    "web": production_config_errors(serves_http=True),
    "hosts": settings.ALLOWED_HOSTS,
    "origins": settings.CSRF_TRUSTED_ORIGINS,
}))
"""


def test_only_processes_serving_http_need_allowed_hosts():
    result = run_python(WHO_NEEDS_WHAT, clean_env(**{**PRODUCTION_ENV, "ALLOWED_HOSTS": None}))

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["worker"] == []
    assert [error.split(" ")[0] for error in answer["web"]] == ["ALLOWED_HOSTS"]


def test_on_railway_the_services_own_domain_is_allowed_and_trusted():
    env = clean_env(
        **{**PRODUCTION_ENV, "ALLOWED_HOSTS": None, **RAILWAY_FRESH, "RAILWAY_PUBLIC_DOMAIN": "cursos.up.railway.app"}
    )

    result = run_python(WHO_NEEDS_WHAT, env)

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["web"] == []
    assert "cursos.up.railway.app" in answer["hosts"]
    assert answer["origins"] == ["https://cursos.up.railway.app"]


def test_gunicorn_refuses_to_start_in_one_line_without_production_settings():
    gunicorn = Path(sys.executable).parent / "gunicorn"
    result = subprocess.run(
        [gunicorn, "backend.wsgi", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0"],
        cwd=ROOT,
        env=clean_env(**RAILWAY_FRESH),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "error: SECRET_KEY must be set" in result.stderr
    assert "Traceback" not in result.stderr


def test_manage_py_without_django_says_how_to_run_it():
    # -S: no site-packages, as a Python without the project's venv.
    result = subprocess.run(
        [sys.executable, "-S", "manage.py", "outbox_status"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 2
    assert (
        result.stderr.strip() == "error: Django is not installed for this Python; locally, run ./scripts/manage COMMAND"
    )
