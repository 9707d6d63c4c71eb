"""TRUNCATE between tests: one long-lived database, emptied after every test.

This is the usual hand-made isolation: tests commit for real on one connection, and a fixture
truncates every table afterwards (``RESTART IDENTITY CASCADE``, so ids restart and no foreign key
blocks it). The tables are listed from the catalog once per session, as such fixtures do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from bench_work import database_round_trip
from psycopg import sql


@pytest.fixture(scope="session")
def truncating_connection() -> Iterator[tuple[psycopg.Connection[Any], sql.Composed]]:
    with psycopg.connect(os.environ["BENCH_TRUNCATE_URL"]) as conn:
        names = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
        conn.commit()
        truncate = sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
            sql.SQL(", ").join(sql.Identifier(name) for (name,) in names)
        )
        yield conn, truncate


@pytest.fixture
def db(
    truncating_connection: tuple[psycopg.Connection[Any], sql.Composed],
) -> Iterator[psycopg.Connection[Any]]:
    conn, truncate = truncating_connection
    yield conn
    conn.rollback()  # whatever a failed test left uncommitted
    conn.execute(truncate)
    conn.commit()


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_round_trip(db: psycopg.Connection[Any], number: int) -> None:
    database_round_trip(db, number)
