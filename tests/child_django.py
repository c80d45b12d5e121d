"""Run Django in a child process with a chosen environment (settings are read once per process)."""

import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What a Railway service would set; each test changes what it is about.
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "backend.settings",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "cursos.up.railway.app",
    "DATABASE_URL": "sqlite:///:memory:",
    "CACHE_URL": "locmemcache://",
}


def clean_env(**overrides: str | None) -> dict[str, str]:
    """The current environment minus Django/app settings, plus `overrides` (None removes)."""
    app_names = {"DEBUG", "PRODUCTION", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "EMAIL_URL", "LOG_FORMAT"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in app_names and not k.startswith(("RAILWAY_", "DJANGO_", "ANYMAIL_", "SECURE_"))
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_python(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def run_manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    """A local TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, path: str, port: int, body: dict | None = None, **headers: str) -> tuple[int, dict, dict]:
    """One JSON request to a server this test started on 127.0.0.1: (status, headers, JSON body).

    Status 0 when nothing answers yet (a server still starting), so callers can poll with it.
    """
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"{}")
    except OSError:
        return 0, {}, {}
