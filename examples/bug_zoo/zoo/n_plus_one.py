"""The orders page: each customer, with the number and the sum of their orders.

``Shop`` is the data layer; the page asks it for the customers, then for their orders. Fixed:
one question for every customer's orders at once. Buggy: one question per customer, the N+1 that
an ORM's lazy loading also writes, unseen, on every page that loops over a relationship.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg

from zoo import variant


@dataclass(frozen=True)
class Customer:
    id: int
    name: str


class Shop:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def add_customer(self, name: str, totals: list[Decimal]) -> None:
        query = "INSERT INTO customers (name) VALUES (%s) RETURNING id"
        customer_id = self.conn.execute(query, (name,)).fetchone()[0]
        self.conn.cursor().executemany(
            "INSERT INTO orders (customer_id, total) VALUES (%s, %s)",
            [(customer_id, total) for total in totals],
        )

    def customers(self) -> list[Customer]:
        rows = self.conn.execute("SELECT id, name FROM customers ORDER BY name").fetchall()
        return [Customer(*row) for row in rows]

    def orders_of(self, customer_ids: list[int]) -> dict[int, list[Decimal]]:
        """The totals of these customers' orders, by customer id."""
        query = "SELECT customer_id, total FROM orders WHERE customer_id = ANY(%s) ORDER BY id"
        totals: dict[int, list[Decimal]] = {}
        for customer_id, total in self.conn.execute(query, (customer_ids,)):
            totals.setdefault(customer_id, []).append(total)
        return totals


def fixed_orders_page(shop: Shop) -> list[str]:
    customers = shop.customers()
    orders = shop.orders_of([customer.id for customer in customers])  # one statement for all
    return [line(customer, orders.get(customer.id, [])) for customer in customers]


def buggy_orders_page(shop: Shop) -> list[str]:
    return [
        line(customer, shop.orders_of([customer.id]).get(customer.id, []))  # one per customer
        for customer in shop.customers()
    ]


def line(customer: Customer, totals: list[Decimal]) -> str:
    return f"{customer.name}: {len(totals)} orders, {sum(totals, Decimal(0))}"


orders_page = variant(fixed=fixed_orders_page, buggy=buggy_orders_page)
