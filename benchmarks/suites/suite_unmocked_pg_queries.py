"""unmocked's ``pg`` with the ``queries`` fixture recording every statement the test sends."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest
from bench_work import database_round_trip

from unmocked.checks import Queries


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_round_trip(pg: psycopg.Connection[Any], queries: Queries, number: int) -> None:
    database_round_trip(pg, number)
