"""unmocked's ``sa_async_session``: the async ORM work inside the test's outer transaction, rolled
back, over the driver ``BENCH_SA_ASYNC_DRIVER`` names (asyncpg, unmocked's default, unless it says
psycopg); the tests run in the session's event loop, as its floor's (``suite_sa_async_shared.py``).
"""

from __future__ import annotations

import os

import pytest
from bench_orm import async_orm_round_trip
from sqlalchemy.ext.asyncio import AsyncSession

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def sa_async_driver() -> str:
    """The mode's driver; the floor's connection uses the same one."""
    return os.environ.get("BENCH_SA_ASYNC_DRIVER", "asyncpg")


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
async def test_round_trip(sa_async_session: AsyncSession, number: int) -> None:
    await async_orm_round_trip(sa_async_session, number)
