"""A customer's receipts, found by the address they were mailed to.

Addresses are stored in lower case (a CHECK constraint holds them to it), and ``receipts_email``
indexes them. Fixed: the address asked for is lowered, and the column compared as it is. Buggy:
``lower(email) = lower(%s)`` finds the same rows, but ``lower(email)`` is an expression the
index on ``email`` cannot serve, so every lookup reads every receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg

from zoo import variant


@dataclass(frozen=True)
class Receipt:
    id: int
    total: Decimal


def record(conn: psycopg.Connection, email: str, total: Decimal) -> int:
    query = "INSERT INTO receipts (email, total) VALUES (%s, %s) RETURNING id"
    return conn.execute(query, (email.lower(), total)).fetchone()[0]


def fixed_receipts_for(conn: psycopg.Connection, email: str) -> list[Receipt]:
    query = "SELECT id, total FROM receipts WHERE email = %s"
    return [Receipt(*row) for row in conn.execute(query, (email.lower(),))]


def buggy_receipts_for(conn: psycopg.Connection, email: str) -> list[Receipt]:
    query = "SELECT id, total FROM receipts WHERE lower(email) = lower(%s)"
    return [Receipt(*row) for row in conn.execute(query, (email,))]


receipts_for = variant(fixed=fixed_receipts_for, buggy=buggy_receipts_for)
