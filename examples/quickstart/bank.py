"""A tiny bank: the kind of data layer whose bugs a mocked database never shows."""

from __future__ import annotations

from decimal import Decimal

import psycopg


class InsufficientFunds(Exception):
    pass


def open_account(conn: psycopg.Connection, owner: str, tags: list[str] = ()) -> int:
    row = conn.execute(
        "INSERT INTO accounts (owner, tags) VALUES (%s, %s) RETURNING id", (owner, list(tags))
    ).fetchone()
    conn.commit()
    return row[0]


def deposit(conn: psycopg.Connection, account_id: int, amount: Decimal) -> None:
    conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, account_id))
    conn.commit()


def transfer(conn: psycopg.Connection, from_id: int, to_id: int, amount: Decimal) -> None:
    """Move money in one transaction; the CHECK constraint is what stops overdrafts."""
    try:
        with conn.transaction():
            # Lock both rows in id order so two opposite transfers cannot deadlock.
            conn.execute(
                "SELECT id FROM accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                ([from_id, to_id],),
            )
            conn.execute(
                "UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, from_id)
            )
            conn.execute(
                "UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, to_id)
            )
            conn.execute(
                "INSERT INTO transfers (from_id, to_id, amount) VALUES (%s, %s, %s)",
                (from_id, to_id, amount),
            )
    except psycopg.errors.CheckViolation:
        raise InsufficientFunds(f"account {from_id} cannot pay {amount}") from None


def balance(conn: psycopg.Connection, account_id: int) -> Decimal:
    return conn.execute("SELECT balance FROM accounts WHERE id = %s", (account_id,)).fetchone()[0]


def accounts_tagged(conn: psycopg.Connection, tag: str) -> list[str]:
    rows = conn.execute(
        "SELECT owner FROM accounts WHERE %s = ANY(tags) ORDER BY owner", (tag,)
    ).fetchall()
    return [owner for (owner,) in rows]
