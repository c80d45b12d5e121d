import pytest
from rest_framework.test import APIClient

from tests.child_django import PRODUCTION_ENV, clean_env, free_port, run_python

# A fresh process that asks its own /healthz through Django's test client, so
# its settings (and its database) are exactly the environment given.
ASK_HEALTHZ = """
import django, json
django.setup()
from django.test import Client
r = Client().get("/healthz", HTTP_HOST="healthcheck.railway.app")
print(json.dumps({"status": r.status_code, "body": r.json(), "location": r.get("Location")}))
"""


@pytest.mark.django_db
def test_healthz_is_200_when_the_database_answers():
    response = APIClient().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.parametrize(
    "database_url",
    [
        # Nothing listens on a port we just closed: the connection is refused.
        "postgres://app:s3cr3t-db-password@127.0.0.1:{port}/cursos",
        # A SQLite file in a directory that does not exist cannot be opened.
        "sqlite:////nonexistent-dir/for/healthz/db.sqlite3",
    ],
)
def test_healthz_is_503_when_the_database_is_unreachable(database_url):
    import json

    env = clean_env(**{**PRODUCTION_ENV, "DATABASE_URL": database_url.format(port=free_port())})

    result = run_python(ASK_HEALTHZ, env)

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 503
    assert answer["body"] == {"status": "unavailable", "database": "unreachable"}
    assert "s3cr3t-db-password" not in result.stdout + result.stderr


def test_healthz_answers_the_railway_healthcheck_over_plain_http_without_redirect(tmp_path):
    import json

    # Production settings as deployed: HTTPS redirect on, host list without the healthcheck host.
    env = clean_env(**{**PRODUCTION_ENV, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"})

    result = run_python(ASK_HEALTHZ, env)

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer == {"status": 200, "body": {"status": "ok"}, "location": None}
