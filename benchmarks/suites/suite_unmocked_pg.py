"""unmocked's ``pg``: one shared connection, each test inside an outer transaction rolled back."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest
from bench_work import database_round_trip


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_round_trip(pg: psycopg.Connection[Any], number: int) -> None:
    database_round_trip(pg, number)
