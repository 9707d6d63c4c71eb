"""Each test gets the migrated schema; everything it commits is gone for the next test."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

import bank


def test_transfer_moves_money(pg):
    alice = bank.open_account(pg, "alice")
    bob = bank.open_account(pg, "bob")
    bank.deposit(pg, alice, Decimal("100"))
    bank.transfer(pg, alice, bob, Decimal("30"))
    assert bank.balance(pg, alice) == Decimal("70.00")
    assert bank.balance(pg, bob) == Decimal("30.00")


def test_overdraft_is_refused_by_the_database_and_nothing_is_half_done(pg):
    alice = bank.open_account(pg, "alice")
    bob = bank.open_account(pg, "bob")
    with pytest.raises(bank.InsufficientFunds):
        bank.transfer(pg, alice, bob, Decimal("1"))
    assert bank.balance(pg, bob) == Decimal("0")
    assert pg.execute("SELECT count(*) FROM transfers").fetchone()[0] == 0


def test_duplicate_owner_is_a_unique_violation(pg):
    bank.open_account(pg, "alice")
    with pytest.raises(psycopg.errors.UniqueViolation):
        bank.open_account(pg, "alice")


def test_array_columns_are_queried_for_real(pg):
    bank.open_account(pg, "alice", tags=["vip", "eu"])
    bank.open_account(pg, "bob", tags=["eu"])
    assert bank.accounts_tagged(pg, "vip") == ["alice"]
    assert bank.accounts_tagged(pg, "eu") == ["alice", "bob"]


def test_each_test_starts_from_the_migrated_schema_only(pg):
    assert pg.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0


def test_concurrent_opposite_transfers_do_not_deadlock(pg_url):
    """Two connections and real commits: the job of a fresh database, not a rollback."""
    import threading

    with psycopg.connect(pg_url) as setup:
        alice = bank.open_account(setup, "alice")
        bob = bank.open_account(setup, "bob")
        bank.deposit(setup, alice, Decimal("100"))
        bank.deposit(setup, bob, Decimal("100"))

    errors: list[BaseException] = []

    def pay(from_id: int, to_id: int) -> None:
        try:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                for _ in range(20):
                    bank.transfer(conn, from_id, to_id, Decimal("1"))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=pay, args=pair) for pair in ((alice, bob), (bob, alice))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(pg_url) as check:
        assert bank.balance(check, alice) + bank.balance(check, bob) == Decimal("200")
