"""What a tenant owes: the invoices of every tenant in one table, kept apart by row-level security.

Each transaction names its tenant (``set_config('app.tenant', ..., true)``), and the policy of
migrations/005_invoices.sql shows it that tenant's rows only. Fixed: the billing job names the
tenant before it adds up. Buggy: it filters with ``WHERE tenant_id = %s`` and never names the
tenant. As the superuser, whom no policy applies to, that is right; as the app's role the policy
hides every row but those of the tenant the connection named last, or all of them when it named
none, and the tenant is billed 0.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg

from zoo import variant

TOTAL = "SELECT coalesce(sum(amount), 0) FROM invoices WHERE tenant_id = %s"


def as_tenant(conn: psycopg.Connection, tenant_id: int) -> None:
    """Name the tenant of the current transaction (``true``: until the transaction ends)."""
    conn.execute("SELECT set_config('app.tenant', %s, true)", (str(tenant_id),))


def add_invoice(conn: psycopg.Connection, tenant_id: int, amount: Decimal) -> None:
    with conn.transaction():
        as_tenant(conn, tenant_id)
        query = "INSERT INTO invoices (tenant_id, amount) VALUES (%s, %s)"
        conn.execute(query, (tenant_id, amount))


def fixed_amount_due(conn: psycopg.Connection, tenant_id: int) -> Decimal:
    with conn.transaction():
        as_tenant(conn, tenant_id)
        return conn.execute(TOTAL, (tenant_id,)).fetchone()[0]


def buggy_amount_due(conn: psycopg.Connection, tenant_id: int) -> Decimal:
    with conn.transaction():  # the tenant is never named
        return conn.execute(TOTAL, (tenant_id,)).fetchone()[0]


amount_due = variant(fixed=fixed_amount_due, buggy=buggy_amount_due)
