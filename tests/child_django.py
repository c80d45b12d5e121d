"""Run Django in a child process with a chosen environment (settings are read once per process)."""

import os
import secrets
import socket
import subprocess
import sys
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
