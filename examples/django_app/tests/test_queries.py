"""Queries whose meaning only PostgreSQL defines; a SQLite or mocked suite passes them blind.

Each test here runs with ``db``: inside a transaction that is rolled back afterwards, on a
database cloned from the template the migrations built.
"""

from __future__ import annotations

import pytest
from django.db import DataError, IntegrityError, transaction

from catalog import services
from catalog.models import Category, Product


def test_array_containment_finds_tagged_products(db, make_product):
    """``tags__contains`` is ``@>`` on a ``varchar[]``: SQLite has no array type at all."""
    make_product("A", tags=["sale", "summer"])
    make_product("B", tags=["summer"])
    assert [p.sku for p in services.tagged("sale")] == ["A"]
    assert [p.sku for p in services.tagged("summer")] == ["A", "B"]


def test_json_list_containment_finds_colors(db, make_product):
    """``data__colors__contains`` is jsonb ``@>``; SQLite refuses ``contains`` on JSON fields."""
    make_product("RED", data={"colors": ["red", "blue"]})
    make_product("GREEN", data={"colors": ["green"]})
    make_product("NONE", data={})
    assert [p.sku for p in services.in_color("red")] == ["RED"]


def test_json_numbers_compare_as_numbers_and_text_is_not_a_number(db, make_product):
    """jsonb compares 120 > 25 numerically, and never matches "120" stored as a string.

    A suite that mocks the query, or a database that compares JSON as text, misses both halves.
    """
    make_product("WIDE", data={"dimensions": {"width_cm": 120}})
    make_product("NARROW", data={"dimensions": {"width_cm": 9}})
    make_product("TEXT", data={"dimensions": {"width_cm": "120"}})
    assert [p.sku for p in services.wider_than(25)] == ["WIDE"]


def test_full_text_search_matches_word_stems_and_ranks_names_first(db, make_product):
    """English stemming: "running" finds "Running" and "runs"; a hit in the name outranks one in
    the description. None of this exists outside PostgreSQL."""
    make_product("ROAD", name="Road Shoe", description="Light, for fast runs on asphalt")
    make_product("TRAIL", name="Trail Running Shoe", description="Grippy soles for mud")
    make_product("BOOT", name="Hiking Boot", description="Waterproof leather")
    found = services.search("running")
    assert [p.sku for p in found] == ["TRAIL", "ROAD"]
    assert found[0].rank > found[1].rank


def test_a_too_long_sku_is_refused_not_silently_stored(db, make_product):
    """``max_length`` is a real ``varchar(12)`` here; SQLite would keep all 20 characters."""
    with pytest.raises(DataError), transaction.atomic():
        make_product("X" * 20)
    assert not Product.objects.exists()


def test_duplicate_sku_is_refused_by_the_unique_index(db, make_product):
    make_product("DUP")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_product("DUP")
    assert Product.objects.filter(sku="DUP").count() == 1


def test_negative_stock_is_refused_by_a_check_constraint(db, make_product):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_product("NEG", stock=-1)


def test_every_test_starts_with_the_rows_of_the_data_migration(db):
    assert sorted(Category.objects.values_list("slug", flat=True)) == [
        "outdoor",
        "shoes",
        "uncategorized",
    ]
