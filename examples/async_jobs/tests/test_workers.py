"""Workers on several connections at once. Row locks only exist between real transactions, so
these tests take ``pg_url``, a database of their own where every commit is real (and which is
dropped after the test), instead of the rolled-back session of tests/test_api.py."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from jobqueue.queue import claim, enqueue
from jobqueue.worker import work

pytestmark = pytest.mark.asyncio


@pytest.fixture
def sessions(pg_url):
    """Sessions on the test's own database, each with a connection of its own."""
    url = pg_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    # NullPool: each test runs in an event loop of its own, and asyncpg connections cannot
    # outlive their loop.
    return async_sessionmaker(create_async_engine(url, poolclass=NullPool))


async def enqueue_many(sessions, count):
    async with sessions() as session, session.begin():
        return [await enqueue(session, "email", {"n": n}) for n in range(count)]


async def test_a_job_claimed_by_one_worker_is_skipped_by_the_next(sessions):
    first, second = await enqueue_many(sessions, 2)
    async with sessions() as one, one.begin():
        claimed_by_one = await claim(one, "one")  # its transaction is still open: row locked
        async with sessions() as two, two.begin():
            claimed_by_two = await claim(two, "two")
    assert (claimed_by_one.id, claimed_by_two.id) == (first, second)


async def test_a_job_whose_worker_failed_is_claimed_again(sessions):
    (job_id,) = await enqueue_many(sessions, 1)
    with pytest.raises(RuntimeError):
        async with sessions() as one, one.begin():
            await claim(one, "one")
            raise RuntimeError("worker died mid-job")  # the transaction rolls back
    async with sessions() as two, two.begin():
        assert (await claim(two, "two")).id == job_id


async def test_concurrent_workers_run_every_job_exactly_once(sessions):
    job_ids = await enqueue_many(sessions, 40)
    ran: list[int] = []

    async def handle(job):
        await asyncio.sleep(0.001)  # let the other workers claim meanwhile
        ran.append(job.id)

    counts = await asyncio.gather(*(work(sessions, f"worker-{n}", handle) for n in range(4)))
    assert sorted(ran) == job_ids
    assert sum(counts) == 40
    tally = text("SELECT status, attempts, count(*) FROM jobs GROUP BY status, attempts")
    async with sessions() as session:
        assert (await session.execute(tally)).all() == [("done", 1, 40)]
