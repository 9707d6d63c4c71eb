"""A JSON endpoint, so a live server test can read the database over HTTP."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from catalog import services


def product_list(request: HttpRequest) -> JsonResponse:
    """``GET /products/?tag=sale``: the products carrying a tag."""
    products = services.tagged(request.GET.get("tag", ""))
    return JsonResponse(
        {"products": [{"sku": p.sku, "name": p.name, "stock": p.stock} for p in products]}
    )
