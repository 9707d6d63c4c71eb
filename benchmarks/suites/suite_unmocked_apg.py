"""unmocked's ``apg``: a psycopg ``AsyncConnection``, each test inside an outer transaction rolled
back; the tests run in the session's event loop, as its floor's (``suite_async_shared.py``)."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest
from bench_work import async_database_round_trip

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
async def test_round_trip(apg: psycopg.AsyncConnection[Any], number: int) -> None:
    await async_database_round_trip(apg, number)
