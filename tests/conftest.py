import pytest
from django.core.mail.backends.smtp import EmailBackend
from django.db import connection

from tests.fake_email_api import FakeEmailApi
from tests.smtp import SilentServer, SMTPServer


def pytest_collection_modifyitems(config, items):
    # PostgreSQL-only tests (SKIP LOCKED, LISTEN/NOTIFY, several processes)
    # are deselected by `-m "not postgres"` in the SQLite run of scripts/test.
    # Run by hand against SQLite they must say why they did not run.
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        skip = pytest.mark.skip(reason="needs PostgreSQL (DATABASE_URL points elsewhere)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def smtp_server():
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def silent_server():
    server = SilentServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_backend_factory(smtp_server, settings):
    """A connection factory for OutboxWorker that talks to the test SMTP server."""
    return lambda: EmailBackend(host="127.0.0.1", port=smtp_server.port, timeout=settings.EMAIL_TIMEOUT)


@pytest.fixture
def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def email_api(settings):
    """A fake Postmark API, with Django's email backend pointed at it (anymail)."""
    api = FakeEmailApi().start()
    # What EMAIL_BACKEND=anymail.backends.postmark.EmailBackend plus
    # ANYMAIL_POSTMARK_SERVER_TOKEN / ANYMAIL_POSTMARK_API_URL give in production.
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "test-server-token", "POSTMARK_API_URL": api.url}
    yield api
    api.stop()
