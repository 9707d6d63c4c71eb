"""The async ORM work with no isolation: a plain ``AsyncSession`` per test on one long-lived
connection, real commits, never cleaned up.

The floor of ``sa_async_session``, as ``suite_sa_shared.py`` is of ``sa_session``, over the driver
``BENCH_SA_ASYNC_DRIVER`` names (asyncpg, unmocked's default, unless it says psycopg). An asyncpg
connection belongs to the event loop that opened it, so the connection and the tests live in the
session's loop (``loop_scope="session"``); the ``sa_async_session`` modes run in it too.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from bench_orm import async_orm_round_trip
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_connection() -> AsyncIterator[AsyncConnection]:
    driver = os.environ.get("BENCH_SA_ASYNC_DRIVER", "asyncpg")
    url = os.environ["BENCH_SHARED_URL"].replace("postgresql://", f"postgresql+{driver}://", 1)
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        yield connection
    await engine.dispose()


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
async def test_round_trip(shared_connection: AsyncConnection, number: int) -> None:
    async with AsyncSession(bind=shared_connection) as session:
        await async_orm_round_trip(session, number)
