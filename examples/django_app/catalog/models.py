"""Models that lean on PostgreSQL: arrays, JSON documents, full-text search, row locks."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models


class Category(models.Model):
    """Rows come from a data migration: every database starts with them."""

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    sku = models.CharField(max_length=12, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    tags = ArrayField(models.CharField(max_length=30), default=list, blank=True)
    data = models.JSONField(default=dict, blank=True)
    """Free-form attributes: ``{"colors": ["red"], "dimensions": {"width_cm": 30}}``."""
    stock = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [
            GinIndex(fields=["tags"], name="product_tags_gin"),
            GinIndex(fields=["data"], name="product_data_gin"),
            GinIndex(
                SearchVector("name", "description", config="english"), name="product_search_gin"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class Job(models.Model):
    """A work queue in a table: workers claim jobs with ``SELECT ... FOR UPDATE SKIP LOCKED``."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"

    kind = models.CharField(max_length=50)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    claimed_by = models.CharField(max_length=50, blank=True)
