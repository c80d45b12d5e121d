"""gunicorn settings; every value can be overridden by the environment variable named beside it."""

import os


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# Railway (and scripts/run locally) tell the process which port to listen on.
bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# Sync workers: each handles one request at a time; requests never wait on SMTP.
workers = _env_int("WEB_CONCURRENCY", 2)
# A safety margin, not the cure: slow I/O (email) never runs inside a request.
timeout = _env_int("GUNICORN_TIMEOUT", 120)
# On SIGTERM, in-flight requests get this long to finish before workers are killed.
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Recycle workers now and then so a slow leak never grows unbounded; jitter
# keeps them from all restarting at the same moment.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 1000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 100)
# Logs to stdout/stderr, where Railway collects them.
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = os.environ.get("GUNICORN_ERRORLOG", "-")
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# Railway's proxy sits in front and sets X-Forwarded-*; trust it so Django sees https.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")

# LOG_FORMAT=json: gunicorn's own lines (start-up, worker exits, the access log)
# become JSON objects too, with the request id of the request they describe.
if os.environ.get("LOG_FORMAT", "text") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "backend.logs.JsonFormatter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }

# gunicorn's control socket (for `gunicornc`) is not used here, and its default
# path is one per user, shared by every gunicorn on the machine.
control_socket_disable = os.environ.get("GUNICORN_CONTROL_SOCKET", "off") == "off"


def on_starting(server: object) -> None:
    """Refuse to start, in one line, when production settings are missing (backend/startup.py).

    Runs in the master before any worker boots, so a misconfigured deploy
    fails its healthcheck with a sentence instead of a worker-boot traceback.
    """
    import sys

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    from django.core.exceptions import ImproperlyConfigured

    try:
        from backend.startup import require_production_config

        require_production_config(serves_http=True)
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
