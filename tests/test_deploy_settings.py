"""Production settings, each checked in a fresh process with a Railway-like environment."""

import json

import pytest

from tests.child_django import PRODUCTION_ENV, clean_env, run_manage, run_python


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
    assert anymail == {"POSTMARK_SERVER_TOKEN": "tok", "POSTMARK_API_URL": "http://127.0.0.1:9/"}
