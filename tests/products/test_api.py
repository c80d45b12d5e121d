import pytest
from rest_framework.test import APIClient

from tests.factories import make_product

pytestmark = pytest.mark.django_db


def test_product_list_shows_only_active_products_paginated():
    active = make_product(name="Ativo")
    make_product(name="Inativo", active=False)

    response = APIClient().get("/api/products/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert [p["id"] for p in body["results"]] == [active.pk]
    assert body["results"][0]["price"] == "297.00"


def test_seed_demo_is_idempotent():
    from django.core.management import call_command

    from backend.products.models import Product

    call_command("seed_demo", verbosity=0)
    call_command("seed_demo", verbosity=0)

    assert Product.objects.count() == 3
