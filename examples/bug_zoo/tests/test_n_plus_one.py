"""N+1: caught by ``queries.no_n_plus_one()``, which a fake data layer cannot ask."""

from __future__ import annotations

from decimal import Decimal

from zoo.n_plus_one import Customer, Shop, orders_page

PAGE = ["ann: 2 orders, 15.50", "bob: 2 orders, 15.50", "cy: 2 orders, 15.50", "di: 0 orders, 0"]


class FakeShop:
    """The data layer, in memory: it answers whatever it is asked, however often."""

    def __init__(self, orders: dict[str, list[Decimal]]) -> None:
        self.customers_by_id = {n: Customer(n, name) for n, name in enumerate(orders, 1)}
        self.orders = {n: orders[customer.name] for n, customer in self.customers_by_id.items()}

    def customers(self) -> list[Customer]:
        return list(self.customers_by_id.values())

    def orders_of(self, customer_ids: list[int]) -> dict[int, list[Decimal]]:
        return {n: self.orders[n] for n in customer_ids if self.orders[n]}


ORDERS = {name: [Decimal("10.00"), Decimal("5.50")] for name in ("ann", "bob", "cy")} | {"di": []}


def test_mocked_the_page_lists_each_customer_with_their_orders():
    assert orders_page(FakeShop(ORDERS)) == PAGE


def test_unmocked_the_page_asks_for_every_customers_orders_at_once(pg, queries):
    shop = Shop(pg)
    for name, totals in ORDERS.items():
        shop.add_customer(name, totals)
    with queries.no_n_plus_one():  # fails when one statement runs 3 times or more
        page = orders_page(shop)
    assert page == PAGE
