"""Code that breaks under a row-level security policy: caught by ``unmocked_role = "app_user"``
(pyproject.toml), under which the test runs as the app's role and the policy applies. As the
superuser, whom no policy applies to, this test passes the buggy version too."""

from __future__ import annotations

from decimal import Decimal
from unittest.mock import MagicMock

from zoo.row_level_security import add_invoice, amount_due


def test_mocked_a_tenant_owes_what_the_database_adds_up():
    conn = MagicMock()
    conn.execute.return_value.fetchone.return_value = (Decimal("120.00"),)
    assert amount_due(conn, 1) == Decimal("120.00")


def test_unmocked_each_tenant_owes_the_sum_of_its_own_invoices(pg):
    add_invoice(pg, 1, Decimal("100.00"))
    add_invoice(pg, 1, Decimal("20.00"))
    add_invoice(pg, 2, Decimal("50.00"))
    assert [amount_due(pg, 1), amount_due(pg, 2)] == [Decimal("120.00"), Decimal("50.00")]
