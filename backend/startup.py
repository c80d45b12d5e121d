"""Refuse to start a process that lacks the production settings it needs.

backend/settings.py only lists what is missing (MISSING_PRODUCTION_SETTINGS),
so the build step can run before a service has its variables; each process
checks here, at start, for the settings its own job needs.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_WHY = {
    "SECRET_KEY": "SECRET_KEY must be set in production (DEBUG off or on Railway)",
    "ALLOWED_HOSTS": "ALLOWED_HOSTS must list the public host names in production (e.g. app.up.railway.app)",
    "DATABASE_URL": "DATABASE_URL must be set in production (on Railway: ${{Postgres.DATABASE_URL}})",
}
# Commands that run at build time, before the service has its variables.
BUILD_COMMANDS = frozenset({"collectstatic"})
# Commands that serve (or vouch for serving) HTTP, and so need ALLOWED_HOSTS.
HTTP_COMMANDS = frozenset({"runserver", "check"})


def production_config_errors(*, serves_http: bool) -> list[str]:
    """Return one sentence per production setting this kind of process needs and lacks."""
    missing = getattr(settings, "MISSING_PRODUCTION_SETTINGS", [])
    return [_WHY[name] for name in missing if serves_http or name != "ALLOWED_HOSTS"]


def require_production_config(*, serves_http: bool) -> None:
    """Raise ImproperlyConfigured naming every missing setting, in one line."""
    errors = production_config_errors(serves_http=serves_http)
    if errors:
        raise ImproperlyConfigured("; ".join(errors) + ".")


def require_config_for_command(argv: list[str]) -> None:
    """The check for `manage.py ARGV`: nothing for build commands, ALLOWED_HOSTS only for HTTP ones."""
    command = argv[1] if len(argv) > 1 else "help"
    if command in BUILD_COMMANDS or command in {"help", "--help", "-h", "version", "--version"}:
        return
    require_production_config(serves_http=command in HTTP_COMMANDS)
