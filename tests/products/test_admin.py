import pytest
from django.urls import reverse

from tests.factories import make_product

pytestmark = pytest.mark.django_db


def test_product_list_shows_prices_in_reais(admin_client):
    make_product(name="Excel", price="1234.50")

    html = admin_client.get(reverse("admin:products_product_changelist")).content.decode()

    assert "Excel" in html
    assert "R$ 1.234,50" in html


def test_a_product_name_that_would_break_the_confirmation_subject_is_refused_in_the_admin(admin_client):
    response = admin_client.post(
        reverse("admin:products_product_add"),
        {"name": "Excel\x01avançado", "slug": "excel", "description": "", "price": "10.00", "active": "on"},
    )

    assert response.status_code == 200  # the form again, with the error
    assert "separadores de linha no nome do produto" in response.content.decode()
