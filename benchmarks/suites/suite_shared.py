"""No isolation at all: one long-lived connection, real commits, nothing ever cleaned up.

The floor for any test that touches a database: the same work as every other mode, with no
isolation around it. What ``pg`` costs over this is what rollback isolation itself costs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from bench_work import database_round_trip


@pytest.fixture(scope="session")
def shared_connection() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(os.environ["BENCH_SHARED_URL"]) as conn:
        yield conn


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_round_trip(shared_connection: psycopg.Connection[Any], number: int) -> None:
    database_round_trip(shared_connection, number)
