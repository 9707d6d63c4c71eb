"""unmocked's ``pg_url``: a database of the test's own, cloned from the migrated template."""

from __future__ import annotations

import os

import psycopg
import pytest
from bench_work import database_round_trip


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_round_trip(pg_url: str, number: int) -> None:
    # Connecting is part of the mode's cost: a database made for one test has no connection yet.
    with psycopg.connect(pg_url) as conn:
        database_round_trip(conn, number)
