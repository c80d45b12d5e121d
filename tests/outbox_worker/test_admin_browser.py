"""The operator's whole path in a real browser: a failed email, found, resent, delivered.

Everything is real: Debian's Chromium driven by Playwright, the app under
gunicorn with its gunicorn.conf.py and whitenoise serving collected (hashed)
static files with DEBUG off, the outbox worker as a separate process, and an
SMTP server that rejects the first delivery with a permanent 550.
"""

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection, transaction
from django.utils import timezone

from backend.enrollments.services import enrollment_create
from outbox_worker.models import OutboxMessage, OutboxStatus, WorkerHeartbeat
from outbox_worker.services import outbox_enqueue
from tests.child_django import free_port
from tests.factories import make_product
from tests.staff import PASSWORD, make_operator

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def screenshot_dir(tmp_path: Path) -> Path:
    """docs/ when SAVE_SCREENSHOTS=1 (to refresh the README's pictures), else the test's temp dir.

    Always writing to docs/ would leave every developer's tree modified after
    each test run (times and ids change).
    """
    return DOCS if os.environ.get("SAVE_SCREENSHOTS") == "1" else tmp_path


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.postgres


def _require_browser() -> None:
    """Skip loudly when there is no browser, but only outside CI: in CI a missing browser is a failure."""
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        problem = f"python playwright is not installed ({exc}); run ./scripts/test, which installs it"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} is missing; ./scripts/test installs it with apt-get when run as root"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"BROWSER TEST CANNOT RUN IN CI: {problem}")
        pytest.skip(f"!!! BROWSER TEST SKIPPED: {problem} !!!")


@pytest.fixture
def browser_available() -> None:
    """Check for the browser before any server starts."""
    _require_browser()


def _wait_until_listening(port: int, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Return once `port` accepts connections; fail at once if the process dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            pass
        try:
            # Waits for the process to exit; the timeout is the pause between two probes.
            process.wait(timeout=0.1)
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read_text()}")
        except subprocess.TimeoutExpired:
            pass
    pytest.fail(f"gunicorn did not listen on {port} within {timeout}s:\n{log.read_text()}")


def _test_database_url() -> str:
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def app_env(transactional_db, smtp_server, tmp_path) -> dict[str, str]:
    """Environment for the app's processes: the test database, the test SMTP server, production-like static."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
        "CONN_MAX_AGE": "0",
        "DEBUG": "false",
        "TEST_HASHED_STATIC": "1",
        "STATIC_ROOT": str(tmp_path / "static"),
        "EMAIL_URL": smtp_server.url,
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def gunicorn(app_env, tmp_path) -> Iterator[str]:
    """Serve the app with real gunicorn and the project's gunicorn.conf.py; yield its base URL."""
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=app_env,
        check=True,
        timeout=120,
    )
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "backend.wsgi", "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env={**app_env, "PORT": str(port), "WEB_CONCURRENCY": "2"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_listening(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=60)


def _run_worker(app_env: dict[str, str]) -> None:
    result = subprocess.run(
        # One sender: the story needs the oldest email sent first, and the default
        # several senders would each take one of the three at once.
        [sys.executable, "manage.py", "outbox_worker", "--once", "--concurrency", "1"],
        cwd=ROOT,
        env=app_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_finds_a_rejected_email_resends_it_and_it_is_delivered(
    browser_available, gunicorn, app_env, smtp_server, monkeypatch, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    shots = screenshot_dir(tmp_path)

    # Playwright's sync API runs an event loop in this thread; the ORM calls
    # below are plain synchronous test code, not async views.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    product = make_product(name="Excel do Zero ao Avançado")
    students = [
        ("Ana Souza", "ana@example.com"),
        ("Bruno Lima", "bruno@example.com"),
        ("Carla Dias", "carla@example.com"),
    ]
    enrollments = [enrollment_create(product=product, name=name, email=email) for name, email in students]
    make_operator()
    # The first delivery (Ana's, the oldest due) is rejected for good; later ones are accepted.
    smtp_server.handler.replies.append("550 5.1.1 mailbox unavailable: no such user")
    _run_worker(app_env)
    failed = OutboxMessage.objects.get(source=enrollments[0].outbox_source)
    assert failed.status == OutboxStatus.FAILED
    assert len(smtp_server.handler.received) == 2

    static_responses: list[tuple[str, int]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # An operator on an en-US browser, at the laptop size the issue was filed from.
        page = browser.new_page(viewport={"width": 1366, "height": 1045}, locale="en-US")
        page.on("response", lambda r: static_responses.append((r.url, r.status)) if "/static/" in r.url else None)
        violations = watch_csp_violations(page)

        log_in_as_operator(page, gunicorn, "/admin/outbox_worker/outboxmessage/")

        # The dashboard says one email failed, in pt-BR, though the browser asks for English.
        expect(page.locator("html")).to_have_attribute("lang", "pt-br")
        expect(page.locator(".outbox-health-panel")).to_contain_text("Saúde da outbox")
        expect(page.locator("#changelist-filter")).to_contain_text("Por situação")
        expect(page.locator(".card.status-failed .n")).to_have_text("1")
        expect(page.locator(".failures-24h")).to_have_text("1")
        # Fold the app menu (Django remembers it) so the list and the screenshots get the page's width.
        page.click("#toggle-nav-sidebar")
        # The list then fits 1366 px: its last column ends inside the results box, nothing scrolled out of sight.
        sent_column = page.locator("#result_list th.column-sent").bounding_box()
        results = page.locator("#changelist .results").bounding_box()
        assert sent_column["x"] + sent_column["width"] <= results["x"] + results["width"]

        # Open the failed message and read why, in words, with the provider's text behind a toggle.
        page.click(f"#result_list a[href$='/outboxmessage/{failed.pk}/change/'] >> nth=0")
        expect(page.locator(".field-last_error_box .outbox-meaning")).to_have_text("O endereço não existe.")
        expect(page.locator(".field-last_error_box .outbox-next-step")).to_contain_text(
            "Confira o endereço com o aluno"
        )
        expect(page.locator(".field-last_error_box details code")).not_to_be_visible()
        page.click(".field-last_error_box details summary")
        expect(page.locator(".field-last_error_box details code")).to_contain_text("550")
        expect(page.locator(".inline-group")).to_contain_text("O endereço não existe.")
        expect(page.locator(".field-status_detail .outbox-status")).to_have_text("falhou")
        expect(page.locator(".field-kind_label")).to_contain_text("Confirmação de matrícula")
        expect(page.locator(".field-source_link")).to_contain_text(f"Matrícula #{enrollments[0].pk} — Ana Souza")
        expect(page.frame_locator("iframe.outbox-html-preview").locator("body")).to_contain_text("Ana Souza")
        page.screenshot(path=shots / "admin-failed-message.png", full_page=True)

        # Resend: a confirmation page first, then back on the message, queued again.
        page.click(".detail-action-resend_messages")
        expect(page.locator("tr.plan-allowed")).to_contain_text("volta para a fila")
        page.click("input.confirm-action")
        expect(page.locator(".messagelist")).to_contain_text("Reenvio: 1 mensagem alterada.")
        expect(page.locator(".field-status_detail .outbox-status")).to_have_text("pendente")
        expect(page.locator(".outbox-error-history")).to_contain_text("erro anterior")

        _run_worker(app_env)

        # No reload by hand: the page polls its status (our own script, under the CSP) and refreshes itself.
        expect(page.locator(".field-status_detail .outbox-status")).to_have_text("enviado", timeout=30_000)
        expect(page.locator(".inline-group tbody tr.has_original")).to_have_count(2)
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=shots / "admin-message.png", full_page=True)

        # A worker killed mid-send: the panel says so, and its row can be handed back.
        stuck = _held_by_a_killed_worker()
        page.goto(f"{gunicorn}/admin/outbox_worker/outboxmessage/")
        expect(page.locator(".card.status-sent .n")).to_have_text("3")
        expect(page.locator(".worker-dead")).to_contain_text("morto (sem sinal de vida), visto por último em")
        page.screenshot(path=shots / "admin-dashboard.png", full_page=True)
        page.goto(f"{gunicorn}/admin/outbox_worker/outboxmessage/{stuck.pk}/change/")
        expect(page.locator(".field-status_detail")).to_contain_text("presa a um worker parado")
        page.screenshot(path=shots / "admin-held-by-dead-worker.png", full_page=True)
        page.click(".detail-action-requeue_messages")
        page.click("input.confirm-action")
        expect(page.locator(".messagelist")).to_contain_text("Devolução à fila: 1 mensagem alterada.")
        expect(page.locator(".field-status_detail .outbox-status")).to_have_text("pendente")
        browser.close()

    # Every page above ran under the admin's Content-Security-Policy without breaking it.
    assert violations == []

    # The student got the email, once, with the Message-ID it had from the start.
    received = smtp_server.handler.wait_for(3)
    assert received[-1].rcpt_tos == ["ana@example.com"]
    assert received[-1].message["Message-ID"] == failed.message_id
    assert sorted(r.rcpt_tos[0] for r in received) == ["ana@example.com", "bruno@example.com", "carla@example.com"]
    # whitenoise served the admin's collected, hashed static files under gunicorn.
    assert static_responses and all(status == 200 for _, status in static_responses)
    assert any(re.search(r"/static/admin/css/base\.[0-9a-f]{12}\.css$", url) for url, _ in static_responses)


def _held_by_a_killed_worker() -> OutboxMessage:
    """A message a worker was sending when it was killed: its heartbeat stopped ten minutes ago."""
    long_ago = timezone.now() - timedelta(minutes=10)
    WorkerHeartbeat.objects.create(
        worker_id="web-7f9c:4242:killed", hostname="web-7f9c", pid=4242, started_at=long_ago, last_seen_at=long_ago
    )
    with transaction.atomic():
        message = outbox_enqueue(to=["bia@example.com"], subject="Boleto disponível", body_text="Olá, Bia")
    OutboxMessage.objects.filter(pk=message.pk).update(
        status=OutboxStatus.SENDING,
        locked_by="web-7f9c:4242:killed",
        locked_until=timezone.now() + timedelta(minutes=1),
        started_at=long_ago,
        attempts=1,
    )
    return message


def log_in_as_operator(page, gunicorn: str, next_path: str) -> None:
    """Sign in on the admin's login page as the operator (tests.staff.make_operator), landing on `next_path`."""
    page.goto(f"{gunicorn}/admin/login/?next={next_path}")
    page.fill("#id_username", "operadora")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


def watch_csp_violations(page) -> list[str]:
    """Collect the browser's console reports of Content-Security-Policy violations (all frames)."""
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    return violations


class _PixelHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def tracker() -> Iterator[str]:
    """A "remote" server for tracking pixels, CSS and fonts: it records every request it gets."""
    _PixelHandler.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PixelHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_preview_loads_nothing_remote_and_the_site_pages_keep_to_the_csp(
    browser_available, gunicorn, tracker, monkeypatch, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with transaction.atomic():
        message = outbox_enqueue(
            to=["ana@example.com"],
            subject="Novidades",
            body_text="Olá",
            body_html=(
                f'<html><head><link rel="stylesheet" href="{tracker}/style.css">'
                f"<style>@import url({tracker}/import.css); @font-face {{font-family: x; src: url({tracker}/f.woff)}}"
                f'</style></head><body style="font-family: x"><p class="hello">Olá, Ana!</p>'
                f'<img src="{tracker}/pixel.gif?aluno=ana" width="1" height="1"></body></html>'
            ),
        )
    make_operator()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="pt-BR")
        violations = watch_csp_violations(page)
        log_in_as_operator(page, gunicorn, f"/admin/outbox_worker/outboxmessage/{message.pk}/change/")

        expect(page.locator(".outbox-remote-blocked")).to_contain_text("remotos bloqueados")
        preview = page.frame_locator("iframe.outbox-html-preview")
        expect(preview.locator("p.hello")).to_have_text("Olá, Ana!")
        # The browser tried each remote reference and refused it (that is what the reports say).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("pixel.gif" in v for v in violations):
            page.wait_for_timeout(50)
        page_violations = list(violations)
        page.locator(".field-html_preview").screenshot(path=tmp_path / "preview-remote-blocked.png")

        # The site's own pages: the API docs (Swagger UI from our static files), the index, the favicon.
        violations.clear()
        page.goto(f"{gunicorn}/api/docs/")
        expect(page.locator(".swagger-ui .title")).to_contain_text("Cursos API")
        favicon = page.request.get(f"{gunicorn}/favicon.ico")
        favicon_type = (favicon.status, favicon.headers["content-type"])
        index = page.request.get(f"{gunicorn}/").json()
        browser.close()

    assert _PixelHandler.hits == []
    assert any("pixel.gif" in v for v in page_violations)
    assert all(tracker in v for v in page_violations), page_violations
    assert violations == []
    assert favicon_type == (200, "image/svg+xml")
    assert index["docs"] == "/api/docs/"


def test_a_missing_browser_fails_in_ci_and_skips_loudly_elsewhere(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="BROWSER TEST CANNOT RUN IN CI: /nonexistent/chromium is missing"):
        _require_browser()

    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="!!! BROWSER TEST SKIPPED: /nonexistent/chromium is missing"):
        _require_browser()
