"""Stock lookups by SKU, each on a connection of its own, as a worker or a script makes them.

The app keeps each connection it opens in ``OPEN`` until it closes it, so that a shutdown can
close whatever is left. (In CPython a connection nothing refers to any more is closed when it is
garbage-collected; the leaks that reach production are the ones something keeps: a registry like
this one, a pool, a cache, a traceback a logger holds on to.) Fixed: the lookup closes its
connection however it ends. Buggy: an unknown SKU raises before ``close()``, and the connection
stays open, one more for every unknown SKU until the server refuses connections.
"""

from __future__ import annotations

import psycopg

from zoo import variant

OPEN: set[psycopg.Connection] = set()
FIND = "SELECT quantity FROM stock WHERE sku = %s"


class UnknownProduct(LookupError):
    """No product has this SKU (the API answers 404)."""


def connect(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url)
    OPEN.add(conn)
    return conn


def close(conn: psycopg.Connection) -> None:
    OPEN.discard(conn)
    conn.close()


def fixed_stock_of(url: str, sku: str) -> int:
    conn = connect(url)
    try:
        row = conn.execute(FIND, (sku,)).fetchone()
    finally:
        close(conn)  # however the lookup ends
    if row is None:
        raise UnknownProduct(sku)
    return row[0]


def buggy_stock_of(url: str, sku: str) -> int:
    conn = connect(url)
    row = conn.execute(FIND, (sku,)).fetchone()
    if row is None:
        raise UnknownProduct(sku)  # leaves before close(): the connection stays open
    close(conn)
    return row[0]


stock_of = variant(fixed=fixed_stock_of, buggy=buggy_stock_of)
