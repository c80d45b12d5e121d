"""The deploy guide names what the deploy really runs."""

from tests.child_django import ROOT
from tests.railway_iac import procfile, railway_services


def test_python_version_is_pinned_for_railpack():
    assert (ROOT / ".python-version").read_text().strip().startswith("3.")


def test_the_deploy_guide_names_every_command_it_relies_on():
    guide = (ROOT / "docs/deploy-railway.md").read_text()
    services = railway_services()
    for text in (
        procfile()["web"],
        procfile()["worker"],
        procfile()["release"],
        services["web"]["build"]["buildCommand"],
        services["cron"]["deploy"]["startCommand"],
        services["cron"]["deploy"]["cronSchedule"],
        str(services["web"]["deploy"]["drainingSeconds"]),
        str(services["worker"]["deploy"]["drainingSeconds"]),
        "/healthz",
        "railway config plan",
        "railway config apply",
        "railway ssh",
        "RAILWAY_DEPLOYMENT_DRAINING_SECONDS",
    ):
        assert text in guide, text
