"""The deploy files say what the Procfile and the docs say."""

import json
import shlex

from tests.child_django import ROOT


def procfile() -> dict[str, str]:
    return dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ": " in line)


def test_railway_configs_start_the_procfile_commands():
    web = json.loads((ROOT / "deploy/railway.web.json").read_text())["deploy"]
    worker = json.loads((ROOT / "deploy/railway.worker.json").read_text())["deploy"]

    assert web["startCommand"] == procfile()["web"]
    assert worker["startCommand"] == procfile()["worker"]
    # gunicorn is started directly (no shell in between), so Railway's SIGTERM reaches it.
    assert shlex.split(web["startCommand"])[0] == "gunicorn"
    assert web["healthcheckPath"] == "/healthz"
    assert isinstance(web["drainingSeconds"], int) and isinstance(worker["drainingSeconds"], int)


def test_python_version_is_pinned_for_railpack():
    assert (ROOT / ".python-version").read_text().strip().startswith("3.")


def test_the_deploy_guide_names_every_command_it_relies_on():
    guide = (ROOT / "docs/deploy-railway.md").read_text()
    for text in (
        procfile()["web"],
        procfile()["worker"],
        "sh scripts/predeploy",
        "collectstatic",
        "/healthz",
        "RAILWAY_DEPLOYMENT_DRAINING_SECONDS",
    ):
        assert text in guide, text
