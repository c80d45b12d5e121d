"""Settings for the test suite: the real settings with test-only defaults.

DATABASE_URL picks the database (scripts/test runs the suite on PostgreSQL
and on SQLite); without it, the local PostgreSQL server is used.
"""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-not-secret")
os.environ.setdefault("DATABASE_URL", "postgres://root@127.0.0.1:5432/outbox")
# DEBUG is off, so these settings count as production: they must name hosts.
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")

from backend.settings import *  # noqa: F403

ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# In-process retries wait milliseconds, not seconds, in tests.
OUTBOX_SEND_RETRY_WAIT = (0.01, 0.05)
OUTBOX_SEND_TRIES = 3
OUTBOX_MAX_ATTEMPTS = 3
# A worker process test that holds sends at the SMTP server's gate for a while sets a longer one.
EMAIL_TIMEOUT = float(os.environ.get("TEST_EMAIL_TIMEOUT", "5"))
# The test client speaks plain http; the redirect itself is tested with production settings.
SECURE_SSL_REDIRECT = False
# Off unless a test turns it on (tests/enrollments/test_idempotency_and_throttling.py): the
# counters live in the database cache, which a transactional test does not reset.
ENROLLMENT_THROTTLE_RATE = None

# The in-process suite renders admin pages without running collectstatic, so it
# uses plain static storage. The browser test's gunicorn sets TEST_HASHED_STATIC=1
# and STATIC_ROOT: it serves collected, hashed files through whitenoise as production does.
if os.environ.get("TEST_HASHED_STATIC") != "1":
    STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
STATIC_ROOT = os.environ.get("STATIC_ROOT", STATIC_ROOT)  # noqa: F405
