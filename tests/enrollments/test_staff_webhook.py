"""The staff webhook task, end to end: enqueued with the enrollment, POSTed by the outbox worker to a real server."""

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import transaction
from django.utils import timezone

from backend.enrollments.models import Enrollment
from backend.enrollments.services import enrollment_create
from outbox_worker.conf import outbox_settings
from outbox_worker.models import OutboxTask, TaskStatus
from outbox_worker.worker import OutboxWorker
from tests.factories import make_product

SECRET = "staff-webhook-test-secret"
TASK_PATH = "backend.enrollments.tasks.notify_staff_channel"


class StaffChannel(ThreadingHTTPServer):
    """A webhook receiver on 127.0.0.1 that answers with the scripted statuses, then 200, and records each request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.statuses: list[int] = []
        self.retry_after: str | None = None  # sent with every 429/503 when set
        self.requests: list[tuple[dict, bytes]] = []
        self.hang = threading.Event()  # set: requests get no answer until `release` is set
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/staff"


class _Handler(BaseHTTPRequestHandler):
    server: StaffChannel

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((dict(self.headers), body))
        if self.server.hang.is_set():
            self.server.release.wait(30)
            return
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        if status in (429, 503) and self.server.retry_after is not None:
            self.send_header("Retry-After", self.server.retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def channel(settings):
    server = StaffChannel()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.STAFF_WEBHOOK_URL = server.url
    settings.STAFF_WEBHOOK_SECRET = SECRET
    settings.STAFF_WEBHOOK_TIMEOUT = 0.5
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def run_worker(smtp_backend_factory):
    def run() -> None:
        OutboxWorker(once=True, poll_interval=0, connection_factory=smtp_backend_factory).run()

    return run


def _enroll():
    return enrollment_create(product=make_product(name="Violão"), name="Ana Souza", email="ana@example.com")


def _task() -> OutboxTask:
    return OutboxTask.objects.get(task_path=TASK_PATH)


def _due_again() -> None:
    OutboxTask.objects.filter(task_path=TASK_PATH).update(available_at=timezone.now())


@pytest.mark.django_db
def test_no_webhook_url_means_no_task(settings):
    settings.STAFF_WEBHOOK_URL = ""
    _enroll()
    assert not OutboxTask.objects.exists()


@pytest.mark.django_db
def test_a_new_enrollment_posts_a_signed_notice_to_the_staff_channel(channel, run_worker):
    enrollment = _enroll()
    assert _task().status == TaskStatus.PENDING  # queued with the enrollment, not sent in the request
    run_worker()
    [(headers, body)] = channel.requests
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Signature"], expected)
    assert headers["Content-Type"].startswith("application/json")
    notice = json.loads(body)
    assert notice["event"] == "enrollment.created"
    assert notice["enrollment"]["id"] == enrollment.pk and notice["product"]["name"] == "Violão"
    row = _task()
    assert (row.status, row.return_value, row.attempts) == (TaskStatus.SUCCEEDED, 200, 1)


@pytest.mark.django_db(transaction=True)
def test_the_notice_is_part_of_the_enrollment_transaction(channel):
    with pytest.raises(RuntimeError), transaction.atomic():
        _enroll()
        assert _task().status == TaskStatus.PENDING
        raise RuntimeError("something after the enrollment failed")
    assert not Enrollment.objects.exists()
    assert not OutboxTask.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("status", [503, 429])
def test_429_and_5xx_are_retried_and_the_next_attempt_succeeds(channel, run_worker, status, settings):
    settings.OUTBOX_FIRST_RETRY = 30  # a backoff that outlasts the run, so "backed off" can be read after
    channel.statuses = [status]
    _enroll()
    run_worker()
    row = _task()
    assert (row.status, row.attempts) == (TaskStatus.PENDING, 1)
    assert f"answered {status}" in row.last_error and "WebhookUnavailable" in row.last_error
    assert row.available_at > timezone.now()  # backed off
    _due_again()
    run_worker()
    row.refresh_from_db()
    assert (row.status, row.attempts, row.return_value) == (TaskStatus.SUCCEEDED, 2, 200)
    assert len(channel.requests) == 2
    # Both attempts carried the same body and signature.
    assert channel.requests[0] == channel.requests[1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("600", 600),  # delta-seconds: longer than the backoff, so it wins
        (lambda: format_datetime(timezone.now() + timedelta(seconds=900), usegmt=True), 900),  # an HTTP date
        ("86400", None),  # a day: capped at OUTBOX_BACKOFF's maximum
        ("soon", 0),  # unreadable: the usual backoff
    ],
)
def test_a_429s_retry_after_is_honoured_up_to_the_backoff_cap(channel, run_worker, retry_after, expected):
    channel.statuses = [429]
    channel.retry_after = retry_after() if callable(retry_after) else retry_after
    _enroll()
    before = timezone.now()
    run_worker()
    row = _task()
    assert (row.status, row.attempts) == (TaskStatus.PENDING, 1)
    wait = (row.available_at - before).total_seconds()
    cap = outbox_settings.BACKOFF[1]
    if expected is None:
        assert 0.8 * cap <= wait <= cap + 5
    elif expected == 0:
        assert wait <= 30  # the quick first retry (or the first backoff step), not a Retry-After
    else:
        assert expected - 5 <= wait <= expected + 5


@pytest.mark.django_db
@pytest.mark.parametrize("status", [400, 401, 404, 410])
def test_other_4xx_fail_the_task_at_once(channel, run_worker, status):
    channel.statuses = [status]
    _enroll()
    run_worker()
    row = _task()
    assert (row.status, row.attempts) == (TaskStatus.FAILED, 1)
    assert "PermanentTaskError" in row.last_error and str(status) in row.last_error
    assert len(channel.requests) == 1


@pytest.mark.django_db
def test_a_hung_endpoint_costs_one_attempt_and_is_retried(channel, run_worker):
    channel.hang.set()
    _enroll()
    run_worker()  # returns: the client gave up after STAFF_WEBHOOK_TIMEOUT
    row = _task()
    assert (row.status, row.attempts) == (TaskStatus.PENDING, 1)
    assert "unreachable" in row.last_error and "timed out" in row.last_error
    channel.release.set()
    channel.hang.clear()
    _due_again()
    run_worker()
    row.refresh_from_db()
    assert row.status == TaskStatus.SUCCEEDED
