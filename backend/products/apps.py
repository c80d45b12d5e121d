from django.apps import AppConfig


class ProductsConfig(AppConfig):
    name = "backend.products"
    label = "products"
    verbose_name = "Produtos"
