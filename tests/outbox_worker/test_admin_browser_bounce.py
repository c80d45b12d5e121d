"""The operator's path from a bounce to a delivered email, in a real browser (see test_admin_browser.py).

The provider's bounce arrives at the Postmark webhook URL under gunicorn, in
Postmark's documented shape (test_tracking_webhooks.py); the operator opens the
bounced message, fixes the address from there, and the worker process delivers
the new confirmation to the corrected address through the test SMTP server.
"""

import base64
import json
import re
import urllib.request

import pytest
from django.utils import timezone

from backend.enrollments.services import enrollment_create
from outbox_worker.models import DeliveryStatus, OutboxMessage, OutboxStatus, Suppression
from tests.factories import make_product
from tests.outbox_worker.test_admin_browser import (  # noqa: F401 (fixtures)
    CHROMIUM,
    CHROMIUM_ARGS,
    _run_worker,
    app_env,
    browser_available,
    gunicorn,
    log_in_as_operator,
    screenshot_dir,
    watch_csp_violations,
)
from tests.outbox_worker.test_tracking_webhooks import postmark_bounce
from tests.staff import make_operator

pytestmark = pytest.mark.postgres

WEBHOOK_SECRET = "hooks:browser-test-secret"


@pytest.fixture
def webhook_secret(app_env) -> str:  # noqa: F811
    """The basic auth the app's processes expect from the provider (ANYMAIL_WEBHOOK_SECRET, as on Railway)."""
    app_env["ANYMAIL_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    return WEBHOOK_SECRET


def post_bounce(base_url: str, message: OutboxMessage, email: str, secret: str) -> int:
    """POST Postmark's hard bounce for `message` the way Postmark does: JSON, basic auth, our id in Metadata."""
    payload = {
        **postmark_bounce("pm-browser-1", email, bounce_type="HardBounce", type_code=1, bounce_id=7001),
        "Metadata": {"outbox_id": str(message.pk)},
        "BouncedAt": timezone.now().isoformat(),  # after the send, as a real bounce is
    }
    request = urllib.request.Request(
        f"{base_url}/webhooks/anymail/postmark/tracking/",
        data=json.dumps(payload).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(secret.encode()).decode(),
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def test_operator_fixes_a_bounced_address_from_the_message_and_the_new_email_is_delivered(
    browser_available,  # noqa: F811
    webhook_secret,
    gunicorn,  # noqa: F811
    app_env,  # noqa: F811
    smtp_server,
    monkeypatch,
    tmp_path,
):
    from django.contrib.auth.models import Permission
    from playwright.sync_api import expect, sync_playwright

    shots = screenshot_dir(tmp_path)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the ORM below runs beside Playwright's loop

    enrollment = enrollment_create(
        product=make_product(name="Excel do Zero ao Avançado"), name="Carla Dias", email="carla@gmial.com"
    )
    operator = make_operator()
    operator.user_permissions.add(Permission.objects.get(codename="view_suppression"))
    _run_worker(app_env)
    bounced = OutboxMessage.objects.get(source=enrollment.outbox_source)
    assert bounced.status == OutboxStatus.SENT  # the typo'd domain accepted it; the provider bounces it later

    assert post_bounce(gunicorn, bounced, "carla@gmial.com", webhook_secret) == 200
    bounced.refresh_from_db()
    assert bounced.delivery_status == DeliveryStatus.BOUNCED

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 1045}, locale="en-US")
        violations = watch_csp_violations(page)
        log_in_as_operator(page, gunicorn, f"/admin/outbox_worker/outboxmessage/{bounced.pk}/change/")
        page.click("#toggle-nav-sidebar")  # the page itself at full width in the screenshots

        # The message page: sent, then bounced by the provider, with the event and the way out.
        expect(page.locator(".field-status_detail .outbox-status")).to_have_text("enviado")
        expect(page.locator(".field-delivery .outbox-delivery")).to_have_text("devolvido")
        expect(page.locator(".inline-group").last).to_contain_text("5.1.1")  # the delivery event
        fix = page.locator("a.outbox-fix-recipient")
        # pt-BR once the catalogue has the new English id; the id itself until then.
        expect(fix).to_have_text(re.compile(r"Corrigir o endereço e reenviar|Fix the address and resend"))
        page.screenshot(path=shots / "admin-bounced-message.png", full_page=True)

        # The enrollment's fix form, reached from the message: the address is suppressed, say so.
        fix.click()
        expect(page.locator(".errornote")).to_contain_text("lista de supressão")
        page.fill("#id_email", "carla@gmail.com")
        page.screenshot(path=shots / "admin-fix-email.png", full_page=True)
        page.click("input[type=submit][value='Corrigir e reenviar']")
        expect(page.locator(".messagelist")).to_contain_text("confirmação nova na fila para carla@gmail.com")

        _run_worker(app_env)

        # The suppression list keeps the typo'd address, with why and where from.
        page.goto(f"{gunicorn}/admin/outbox_worker/suppression/")
        expect(page.locator("#result_list")).to_contain_text("carla@gmial.com")
        page.screenshot(path=shots / "admin-suppression-list.png", full_page=True)
        browser.close()

    assert violations == []
    new = OutboxMessage.objects.exclude(pk=bounced.pk).get()
    assert (new.to, new.status, new.source) == (["carla@gmail.com"], OutboxStatus.SENT, enrollment.outbox_source)
    assert [r.rcpt_tos for r in smtp_server.handler.wait_for(2)] == [["carla@gmial.com"], ["carla@gmail.com"]]
    assert Suppression.objects.active().get().address == "carla@gmial.com"
