import pytest

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
