"""The API and the queue's SQL, each test in a transaction of its own that is rolled back after.

``sa_async_session`` is an asyncpg ``AsyncSession``, as the app uses; the app's commits behave
as in production and the next test sees none of them.
"""

from __future__ import annotations

import httpx
import pytest
import pytest_asyncio

from jobqueue.api import app, get_session
from jobqueue.queue import claim, enqueue, finish, status_of

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def client(sa_async_session):
    """The app, with every request using the test's session."""
    app.dependency_overrides[get_session] = lambda: sa_async_session
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://jobs") as client:
        yield client
    app.dependency_overrides.clear()


async def test_a_submitted_job_is_queued(client):
    submitted = await client.post("/jobs", json={"kind": "email", "payload": {"to": "a@b.c"}})
    assert submitted.status_code == 201
    job = await client.get(f"/jobs/{submitted.json()['id']}")
    assert job.json()["status"] == "queued"


async def test_an_unknown_job_is_a_404(client):
    assert (await client.get("/jobs/999999")).status_code == 404


async def test_a_claim_takes_the_oldest_queued_job_and_marks_it_running(sa_async_session):
    oldest = await enqueue(sa_async_session, "email", {"to": "a@b.c"})
    await enqueue(sa_async_session, "email", {"to": "d@e.f"})
    job = await claim(sa_async_session, "worker-1")
    assert (job.id, job.payload) == (oldest, {"to": "a@b.c"})
    assert await status_of(sa_async_session, oldest) == "running"


async def test_the_database_refuses_a_status_the_queue_does_not_know(sa_async_session):
    from sqlalchemy.exc import IntegrityError

    job_id = await enqueue(sa_async_session, "email", {})
    with pytest.raises(IntegrityError, match="jobs_status_check"):
        await finish(sa_async_session, job_id, status="exploded")


async def test_every_test_starts_with_an_empty_queue(sa_async_session):
    assert await claim(sa_async_session, "worker-1") is None
