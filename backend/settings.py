"""Settings for the course backend, read from the environment (12-factor).

Every value can be set by an environment variable (or a `.env` file in the
project root); README.md lists them all. With no configuration at all the
project runs on a local SQLite file and prints emails to the console.
"""

import os
import re
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
# Production is any run with DEBUG off, and any run on Railway (it sets
# RAILWAY_ENVIRONMENT_ID in every service), so DEBUG=true left in a Railway
# variable stops the deploy instead of serving tracebacks. PRODUCTION=false
# is the explicit way out (e.g. a throwaway preview environment).
PRODUCTION = env.bool("PRODUCTION", default=not DEBUG or bool(os.environ.get("RAILWAY_ENVIRONMENT_ID")))

# --- Production configuration (reported by backend/startup.py) ----------------
# Missing values are listed here, not raised: the build step (collectstatic)
# runs with RAILWAY_ENVIRONMENT_ID set but before a new service has any
# variables, and needs none of them. Every process that does need them
# (gunicorn, the worker, migrate, any manage.py command but collectstatic)
# refuses to start with one line naming what is missing.
MISSING_PRODUCTION_SETTINGS: list[str] = []
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if PRODUCTION:
        MISSING_PRODUCTION_SETTINGS.append("SECRET_KEY")
    else:
        SECRET_KEY = "insecure-development-key-do-not-use-in-production"
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production: unset DEBUG (or set PRODUCTION=false off Railway).")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Railway gives each service with a domain RAILWAY_PUBLIC_DOMAIN (empty until
# one is generated): that host is allowed and trusted without configuration.
if os.environ.get("RAILWAY_PUBLIC_DOMAIN"):
    ALLOWED_HOSTS.append(os.environ["RAILWAY_PUBLIC_DOMAIN"])
    CSRF_TRUSTED_ORIGINS.append(f"https://{os.environ['RAILWAY_PUBLIC_DOMAIN']}")
if PRODUCTION and not ALLOWED_HOSTS and not os.environ.get("RAILWAY_ENVIRONMENT_ID"):
    # Only processes that serve HTTP need it (backend/startup.py). On Railway a
    # web service without a domain yet still passes its healthcheck.
    MISSING_PRODUCTION_SETTINGS.append("ALLOWED_HOSTS")
if PRODUCTION and "DATABASE_URL" not in os.environ:
    # Without it every process would quietly use a SQLite file of its own container.
    MISSING_PRODUCTION_SETTINGS.append("DATABASE_URL")
# Railway's healthchecks come from this host; without it /healthz answers 400.
ALLOWED_HOSTS.append("healthcheck.railway.app")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "anymail",
    "csp",
    "outbox_worker",
    "backend.products",
    "backend.enrollments",
    "backend.throttle",
]

MIDDLEWARE = [
    # Outermost, so every log line of the request (and the error pages) carries its id.
    "backend.middleware.RequestIdMiddleware",
    # /api/ clients always get JSON errors, even from Django's own 404/400/413/500 pages.
    "backend.middleware.JsonErrorsMiddleware",
    "backend.middleware.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every response (settings: CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    # After LocaleMiddleware: the admin is pt-BR whatever Accept-Language says; the API still follows it.
    "backend.middleware.AdminInPortugueseMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backend.urls"
WSGI_APPLICATION = "backend.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# Default: a SQLite file beside manage.py, so a fresh clone runs with no setup.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # The web process and the worker write to the same file. WAL lets readers
        # run beside a writer, and IMMEDIATE takes the write lock at BEGIN, so a
        # transaction never fails half-way with "database is locked" when it
        # upgrades from reading to writing; it waits up to `timeout` seconds instead.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    # Keep connections between requests, and check them before reuse so a
    # database restart costs one reconnect instead of a 500.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Nothing shared lives in Django's cache (the enrollment throttle counts in its
# own table, backend/throttle): a per-process memory cache is enough.
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Locale ---------------------------------------------------------------
LANGUAGE_CODE = "pt-br"
LANGUAGES = [("pt-br", "Português (Brasil)"), ("en", "English")]
# This project's own wording for some of outbox_worker's messages (the recipient is a
# student, "aluno"); catalogues here win over the apps' own.
LOCALE_PATHS = [BASE_DIR / "backend" / "locale"]
TIME_ZONE = "America/Sao_Paulo"
USE_I18N = True
USE_TZ = True
# The reusable outbox app ships English message ids with a pt_BR catalogue
# (outbox_worker/locale); this project names its own kinds and sources for
# the outbox admin (labels, search shortcuts) in backend/enrollments/outbox.py.
OUTBOX_REGISTRY = "backend.enrollments.outbox"

# --- Static files (served by whitenoise from gunicorn) ---------------------
STATIC_URL = "static/"
# Where collectstatic gathers files for whitenoise (the build step on Railway).
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Email ----------------------------------------------------------------
# EMAIL_URL examples: smtp+tls://user:pass@smtp.example.com:587, consolemail://
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
# An HTTP email API instead of SMTP (Railway blocks SMTP below the Pro plan):
# EMAIL_BACKEND=anymail.backends.postmark.EmailBackend (or .resend., .sendgrid. ...)
# with that provider's settings as ANYMAIL_* variables, e.g.
# ANYMAIL_POSTMARK_SERVER_TOKEN, ANYMAIL_POSTMARK_API_URL (the prefix is removed).
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default=vars()["EMAIL_BACKEND"])
ANYMAIL = {name.removeprefix("ANYMAIL_"): value for name, value in os.environ.items() if name.startswith("ANYMAIL_")}
# Delivery events (delivered, bounced, spam) arrive at /webhooks/anymail/<provider>/tracking/
# (outbox_worker.urls), e.g. https://USER:PASS@<host>/webhooks/anymail/postmark/tracking/ in Postmark's
# webhook settings. ANYMAIL_WEBHOOK_SECRET="USER:PASS" is the basic auth every call must carry; Resend's
# calls must also carry its signature (ANYMAIL_RESEND_SIGNING_SECRET="whsec_..."). Unset, anymail would
# accept anyone's events with a warning: a random secret nobody knows refuses them all instead.
ANYMAIL.setdefault("WEBHOOK_SECRET", f"unset:{secrets.token_urlsafe(32)}")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Cursos <nao-responda@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Django's default is no timeout at all: a blocked SMTP port (Railway's lower
# plans) would hang the worker forever. Seconds per socket operation.
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)

# --- Outbox (see outbox_worker/conf.py for what each one does) -------------
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", default=10)
OUTBOX_FIRST_RETRY = env.float("OUTBOX_FIRST_RETRY", default=0.5)
# "base,maximum" seconds between later retries of a temporary failure, doubling.
OUTBOX_BACKOFF = tuple(env.list("OUTBOX_BACKOFF", cast=float, default=[30.0, 3600.0]))
OUTBOX_LEASE_SECONDS = env.float("OUTBOX_LEASE_SECONDS", default=120.0)
OUTBOX_BATCH_SIZE = env.int("OUTBOX_BATCH_SIZE", default=50)
# Worker processes per worker replica (outbox_worker --processes): about one per vCPU.
OUTBOX_PROCESSES = env.int("OUTBOX_PROCESSES", default=1)
OUTBOX_POLL_INTERVAL = env.float("OUTBOX_POLL_INTERVAL", default=2.0)
OUTBOX_NOTIFY = env.bool("OUTBOX_NOTIFY", default=True)
OUTBOX_CLAIM_HOLD_OFF = env.float("OUTBOX_CLAIM_HOLD_OFF", default=0.05)
OUTBOX_FINISH_EVERY = env.int("OUTBOX_FINISH_EVERY", default=10)
OUTBOX_FINISH_WITHIN = env.float("OUTBOX_FINISH_WITHIN", default=1.0)
OUTBOX_SEND_TRIES = env.int("OUTBOX_SEND_TRIES", default=4)
# "first,maximum" seconds of a delivery pause after the provider keeps failing.
OUTBOX_PAUSE_BACKOFF = tuple(env.list("OUTBOX_PAUSE_BACKOFF", cast=float, default=[1.0, 300.0]))
OUTBOX_HEARTBEAT_SECONDS = env.float("OUTBOX_HEARTBEAT_SECONDS", default=5.0)
OUTBOX_WORKER_STALE_AFTER = env.float("OUTBOX_WORKER_STALE_AFTER", default=20.0)
OUTBOX_SEND_DEADLINE = env.float("OUTBOX_SEND_DEADLINE", default=300.0)

# --- Background tasks (Django Tasks API, run by `manage.py outbox_worker`) ---
# `@task` functions enqueue a row in the caller's transaction; the outbox worker
# runs them with the emails' claim, lease, heartbeat and retries. QUEUES empty:
# any queue name is accepted; `outbox_worker --queues a,b` picks which to run.
TASKS = {"default": {"BACKEND": "outbox_worker.tasks.OutboxBackend", "QUEUES": []}}

# The course staff's channel (Slack/Discord-style incoming webhook), told of each
# new enrollment (backend/enrollments/tasks.py). No URL: nothing is enqueued.
STAFF_WEBHOOK_URL = env.str("STAFF_WEBHOOK_URL", default="")
# Signs each body: X-Signature: sha256=<hex HMAC-SHA256(secret, body)>.
STAFF_WEBHOOK_SECRET = env.str("STAFF_WEBHOOK_SECRET", default="")
# Seconds for connecting and for each read; a hung endpoint costs one attempt, not a worker.
STAFF_WEBHOOK_TIMEOUT = env.float("STAFF_WEBHOOK_TIMEOUT", default=10.0)

# --- Security behind Railway's proxy (production only) ---------------------
# Railway's proxy terminates TLS and always sends X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Railway's healthcheck calls plain http://.../healthz and needs a 200, not a redirect.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Preloading is a commitment for the whole registrable domain (hstspreload.org),
# not something a deploy should opt into silently: opt-in, and then Django's
# reminder about it (security.W021) is moot.
SILENCED_SYSTEM_CHECKS = [] if env.bool("SECURE_HSTS_PRELOAD", default=False) else ["security.W021"]

# --- Content-Security-Policy (django-csp) ------------------------------------
# The admin shows student data and previews of emails written by anyone who
# can type a product or student name: no script but our own files may run,
# and nothing may load from another host (an email's tracking pixel would fire
# when an operator looks at it). Inline *styles* are allowed: the admin's own
# templates, the health chart's bar heights and the emails in the preview use
# style attributes, and with img/font/connect limited to 'self' a style cannot
# send anything anywhere. The preview adds its own stricter policy (outbox_worker/admin_display.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Request limits ------------------------------------------------------------
# An enrollment is a few hundred bytes; anything much larger is refused with
# 413 before it is read (backend.middleware.RequestSizeLimitMiddleware).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=64 * 1024)

# --- REST framework ---------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: an anonymous call to a staff endpoint then gets 401 with
    # `WWW-Authenticate: Token` (what a machine client needs to hear), not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    # JSON only, through a parser that answers every body it cannot take with a
    # 400 in the client's language (depth, huge numbers, NaN, duplicate keys, BOM,
    # invalid UTF-8, lone surrogates): backend/parsers.py. Forms get 415.
    "DEFAULT_PARSER_CLASSES": ["backend.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# --- Client address (backend.middleware.client_address) ------------------------
# Which header, if any, names the client: "railway" (Railway's X-Real-IP) is the
# default on Railway, "socket" (the TCP peer; forwarded headers are ignored, so
# a client cannot pick its own throttle bucket) everywhere else, and
# "x-forwarded-for" trusts NUM_PROXIES proxies that append to X-Forwarded-For.
CLIENT_ADDRESS_FROM = env.str(
    "CLIENT_ADDRESS_FROM", default="railway" if os.environ.get("RAILWAY_ENVIRONMENT_ID") else "socket"
)
if CLIENT_ADDRESS_FROM not in ("railway", "socket", "x-forwarded-for"):
    raise ImproperlyConfigured(
        f"CLIENT_ADDRESS_FROM must be railway, socket or x-forwarded-for, not {CLIENT_ADDRESS_FROM!r}."
    )
NUM_PROXIES = env.int("NUM_PROXIES", default=1)
# Anonymous enrollment POSTs per client address, e.g. "20/min", "100/hour";
# empty turns the throttle off.
ENROLLMENT_THROTTLE_RATE = env.str("ENROLLMENT_THROTTLE_RATE", default="20/min") or None
# Checked here: a typo would otherwise surface as a 500 on every enrollment.
if ENROLLMENT_THROTTLE_RATE and not re.fullmatch(
    r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", ENROLLMENT_THROTTLE_RATE
):
    raise ImproperlyConfigured(f"ENROLLMENT_THROTTLE_RATE must look like 20/min, not {ENROLLMENT_THROTTLE_RATE!r}.")

SPECTACULAR_SETTINGS = {
    "TITLE": "Cursos API",
    "DESCRIPTION": "Matrículas em cursos; o email de confirmação sai por uma outbox transacional.",
    "VERSION": "1.0.0",
    # The schema endpoint describes the API, not itself.
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # /api/docs/ loads Swagger UI from our static files (whitenoise), not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No validator badge: it is an image from validator.swagger.io, which the CSP (rightly) blocks.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
}

# --- Logging: one line per event, to stdout (Railway collects stdout) ---------
# LOG_FORMAT=json: one JSON object per line (with request_id and message_id),
# for a log search that filters on fields; "text" reads better in a terminal.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "backend.logs.JsonFormatter"},
    },
    "filters": {
        "request_id": {"()": "backend.logs.RequestIdFilter"},
        # Student addresses never reach a log line in full (the admin shows them).
        "mask_addresses": {"()": "backend.logs.MaskAddressesFilter"},
    },
    "handlers": {
        "null": {"class": "logging.NullHandler"},
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "line",
            "filters": ["request_id", "mask_addresses"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # Replace Django's own console handler instead of printing each line twice.
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # django.request already logs one line per refused request ("Bad Request: /path");
        # this logger would add a traceback for every scanner sending a wrong Host header.
        "django.security.DisallowedHost": {"handlers": ["null"], "propagate": False},
    },
}
