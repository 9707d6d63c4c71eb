"""The running app, over HTTP, reads what the test committed to the test's own database."""

from __future__ import annotations

import json
import urllib.request


def test_the_product_list_serves_what_the_test_committed(live_server, make_product):
    """``live_server`` implies ``transactional_db``: the server's threads open connections of
    their own to the same fresh database, so they see the test's commits."""
    make_product("SALE-1", tags=["sale"], stock=3)
    make_product("FULL-1", tags=["new"])
    with urllib.request.urlopen(f"{live_server.url}/products/?tag=sale", timeout=10) as response:
        body = json.load(response)
    assert body == {"products": [{"sku": "SALE-1", "name": "Product SALE-1", "stock": 3}]}
