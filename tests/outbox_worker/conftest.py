import pytest
from django.core.mail.backends.smtp import EmailBackend

from outbox_worker.worker import OutboxWorker
from tests.processes import kill_leftover_workers


@pytest.fixture(autouse=True)
def _no_leftover_worker_processes():
    yield
    kill_leftover_workers()


@pytest.fixture
def make_worker(smtp_backend_factory):
    """Build an in-process worker that delivers to the test SMTP server."""

    def make(**options) -> OutboxWorker:
        options.setdefault("connection_factory", smtp_backend_factory)
        options.setdefault("once", True)
        options.setdefault("poll_interval", 0)
        return OutboxWorker(**options)

    return make


@pytest.fixture
def backend(smtp_server, settings):
    """Django's own SMTP backend, connected to the test SMTP server (the sends that get the wire bytes)."""
    connection = EmailBackend(host="127.0.0.1", port=smtp_server.port, timeout=settings.EMAIL_TIMEOUT)
    connection.open()
    yield connection
    connection.close()
