"""The HTTP API: submit a job, ask for its status. Each request gets a session from
``get_session``; tests override it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from jobqueue.queue import enqueue, status_of

engine = create_async_engine(
    os.environ.get("JOBS_DATABASE_URL", "postgresql+asyncpg://localhost/jobs")
)
sessions = async_sessionmaker(engine, expire_on_commit=False)
app = FastAPI(title="Jobs")


async def get_session() -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


class NewJob(BaseModel):
    kind: str
    payload: dict[str, Any] = {}


@app.post("/jobs", status_code=201)
async def submit(job: NewJob, session: SessionDep) -> dict[str, int]:
    job_id = await enqueue(session, job.kind, job.payload)
    await session.commit()
    return {"id": job_id}


@app.get("/jobs/{job_id}")
async def status(job_id: int, session: SessionDep) -> dict[str, Any]:
    found = await status_of(session, job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id}")
    return {"id": job_id, "status": found}
