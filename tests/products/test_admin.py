import pytest
from django.urls import reverse

from tests.factories import make_product

pytestmark = pytest.mark.django_db


def test_product_list_shows_prices_in_reais(admin_client):
    make_product(name="Excel", price="1234.50")

    html = admin_client.get(reverse("admin:products_product_changelist")).content.decode()

    assert "Excel" in html
    assert "R$ 1.234,50" in html
