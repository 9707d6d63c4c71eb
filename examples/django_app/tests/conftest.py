"""Fixtures the shop's tests share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from catalog.models import Category, Product


@pytest.fixture
def make_product() -> Callable[..., Product]:
    """Create a product in the data-migration category ``shoes`` unless told otherwise."""

    def make(sku: str = "SKU-1", **fields: Any) -> Product:
        fields.setdefault("name", f"Product {sku}")
        fields.setdefault("category", Category.objects.get(slug="shoes"))
        return Product.objects.create(sku=sku, **fields)

    return make
