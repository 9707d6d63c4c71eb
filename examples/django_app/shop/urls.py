"""URLs of the example shop."""

from __future__ import annotations

from django.urls import path

from catalog import views

urlpatterns = [
    path("products/", views.product_list, name="product-list"),
]
