"""A connection left open on an error path: caught by ``unmocked_leaks = "fail"``
(pyproject.toml), which errors a ``pg_url`` test that ends with a connection to its database
still open."""

from __future__ import annotations

from unittest.mock import MagicMock, patch

import psycopg
import pytest

from zoo.connection_leak import UnknownProduct, stock_of


def test_mocked_an_unknown_sku_is_an_unknown_product():
    conn = MagicMock()
    conn.execute.return_value.fetchone.return_value = None
    with patch.object(psycopg, "connect", return_value=conn), pytest.raises(UnknownProduct):
        stock_of("postgresql://db.example.com/shop", "NOPE")


def test_unmocked_an_unknown_sku_is_an_unknown_product(pg_url):
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO stock VALUES ('MUG', 12)")
    assert stock_of(pg_url, "MUG") == 12
    with pytest.raises(UnknownProduct):
        stock_of(pg_url, "NOPE")
