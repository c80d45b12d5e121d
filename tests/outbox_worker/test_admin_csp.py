"""The admin sends a Content-Security-Policy, and the email preview carries a stricter one of its own."""

import html
import re

import pytest
from django.db import transaction
from django.test import Client

from outbox_worker.admin_display import PREVIEW_POLICY
from outbox_worker.services import outbox_enqueue
from tests.staff import make_operator

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client() -> Client:
    client = Client()
    client.force_login(make_operator())
    return client


def queue(body_html: str):
    with transaction.atomic():
        return outbox_enqueue(to=["ana@example.com"], subject="Oi", body_text="Oi", body_html=body_html)


def srcdoc(page: str) -> str:
    return html.unescape(re.search(r'srcdoc="([^"]*)"', page).group(1))


@pytest.mark.parametrize("path", ["/admin/", "/admin/outbox_worker/outboxmessage/", "/admin/login/"])
def test_admin_pages_forbid_foreign_scripts_and_loads(operator_client, path):
    policy = operator_client.get(path)["Content-Security-Policy"]

    assert "script-src 'self'" in policy
    assert "img-src 'self' data:" in policy
    assert "object-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy


def test_the_preview_document_starts_with_its_own_policy(operator_client):
    message = queue('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><p>Olá</p></body></html>')

    page = operator_client.get(f"/admin/outbox_worker/outboxmessage/{message.pk}/change/").content.decode()

    document = srcdoc(page)
    assert document.startswith(f'<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="{PREVIEW_POLICY}">')
    assert document.endswith("<p>Olá</p></body></html>")
    assert "outbox-remote-blocked" not in page


@pytest.mark.parametrize(
    "body_html",
    [
        '<img src="https://tracker.example/p.gif">',
        "<table background='http://x.example/bg.png'></table>",
        '<link rel="stylesheet" href="//cdn.example/x.css">',
        "<div style=\"background:url('https://x.example/y.png')\"></div>",
        '<style>@import "https://fonts.example/f.css";</style>',
    ],
)
def test_an_email_with_remote_resources_says_they_were_blocked(operator_client, body_html):
    message = queue(body_html)

    page = operator_client.get(f"/admin/outbox_worker/outboxmessage/{message.pk}/change/").content.decode()

    assert "remotos bloqueados" in page
    assert srcdoc(page).endswith(body_html)


def test_a_plain_link_is_not_a_remote_resource(operator_client):
    message = queue('<p><a href="https://cursos.example/aula">Acesse</a></p>')

    page = operator_client.get(f"/admin/outbox_worker/outboxmessage/{message.pk}/change/").content.decode()

    assert "remotos bloqueados" not in page


def test_the_root_is_an_index_of_the_api_and_there_is_a_favicon():
    index = Client().get("/")
    favicon = Client().get("/favicon.ico")

    assert index.status_code == 200
    assert index.json()["endpoints"] == {
        "products": "/api/products/",
        "enrollments": "/api/enrollments/",
        "health": "/healthz",
    }
    assert (favicon.status_code, favicon["Content-Type"]) == (200, "image/svg+xml")
    assert favicon.content.startswith(b"<svg")
