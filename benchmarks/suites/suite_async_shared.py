"""No isolation, async: one long-lived psycopg ``AsyncConnection``, real commits, never cleaned up.

The floor of ``apg``, as ``suite_shared.py`` is of ``pg``. The connection lives in the session's
event loop and the tests run in it too (``loop_scope="session"``), as in the ``apg`` mode, so that
both sides pay the same for their event loop and only the isolation differs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from bench_work import async_database_round_trip

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_connection() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(os.environ["BENCH_SHARED_URL"]) as conn:
        yield conn


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
async def test_round_trip(shared_connection: psycopg.AsyncConnection[Any], number: int) -> None:
    await async_database_round_trip(shared_connection, number)
