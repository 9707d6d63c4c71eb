"""A worker: claim a job, run it and mark it done, in one transaction, until the queue is empty."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobqueue.queue import Job, claim, finish


async def work(
    sessions: async_sessionmaker[AsyncSession],
    worker: str,
    handle: Callable[[Job], Awaitable[None]],
) -> int:
    """Run jobs until none is left; return how many this worker ran.

    The claim's row lock lasts for the whole transaction: if ``handle`` raises or the worker
    dies, the transaction rolls back and the job is queued again for another worker.
    """
    ran = 0
    while True:
        async with sessions() as session, session.begin():
            job = await claim(session, worker)
            if job is None:
                return ran
            await handle(job)
            await finish(session, job.id)
        ran += 1
