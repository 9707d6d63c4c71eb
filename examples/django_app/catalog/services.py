"""What the shop does with its data; the code the tests exercise."""

from __future__ import annotations

from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.db import transaction
from django.db.models import QuerySet

from catalog.models import Job, Product


class OutOfStock(Exception):
    """Fewer items are in stock than were asked for."""


def tagged(tag: str) -> QuerySet[Product]:
    """Products carrying ``tag`` in their ``tags`` array (``tags @> ARRAY[tag]``)."""
    return Product.objects.filter(tags__contains=[tag]).order_by("sku")


def in_color(color: str) -> QuerySet[Product]:
    """Products whose JSON ``data.colors`` list holds ``color`` (``data -> 'colors' @> ...``)."""
    return Product.objects.filter(data__colors__contains=[color]).order_by("sku")


def wider_than(width_cm: int) -> QuerySet[Product]:
    """Products whose JSON ``data.dimensions.width_cm`` is a number above ``width_cm``."""
    return Product.objects.filter(data__dimensions__width_cm__gt=width_cm).order_by("sku")


def search(text: str) -> list[Product]:
    """Products matching ``text`` as English words (stemmed), best match first; names weigh more."""
    vector = SearchVector("name", weight="A", config="english") + SearchVector(
        "description", weight="B", config="english"
    )
    query = SearchQuery(text, config="english")
    return list(
        Product.objects.annotate(document=vector, rank=SearchRank(vector, query))
        .filter(document=query)
        .order_by("-rank", "sku")
    )


def reserve(product_id: int, quantity: int) -> Product:
    """Take ``quantity`` items out of stock; the row is locked so two buyers cannot both win."""
    with transaction.atomic():
        product = Product.objects.select_for_update().get(pk=product_id)
        if product.stock < quantity:
            raise OutOfStock(f"{product.sku}: {product.stock} in stock, {quantity} asked for")
        product.stock -= quantity
        product.save(update_fields=["stock"])
    return product


def claim_next_job(worker: str) -> Job | None:
    """The oldest queued job nobody else is claiming right now, marked as ``worker``'s."""
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(skip_locked=True)
            .filter(status=Job.Status.QUEUED)
            .order_by("id")
            .first()
        )
        if job is None:
            return None
        job.status = Job.Status.RUNNING
        job.claimed_by = worker
        job.save(update_fields=["status", "claimed_by"])
    return job
