"""A lookup no index serves: caught by ``queries.indexed()``, on a handful of rows."""

from __future__ import annotations

from decimal import Decimal
from unittest.mock import MagicMock

from zoo.missing_index import Receipt, receipts_for, record


def test_mocked_receipts_are_found_by_address():
    conn = MagicMock()
    conn.execute.return_value = [(7, Decimal("25.00"))]
    assert receipts_for(conn, "Ann@Example.com") == [Receipt(7, Decimal("25.00"))]


def test_unmocked_receipts_are_found_by_address_through_an_index(pg, queries):
    ann = record(pg, "Ann@Example.com", Decimal("25.00"))
    record(pg, "bob@example.com", Decimal("3.00"))
    with queries.indexed(tables=["receipts"]):  # fails when a statement reads all of receipts
        found = receipts_for(pg, "ann@EXAMPLE.com")
    assert found == [Receipt(ann, Decimal("25.00"))]
