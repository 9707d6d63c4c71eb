"""The queue's SQL. Each function runs in the caller's transaction; the caller commits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# SKIP LOCKED: a job another worker's open transaction has claimed is passed over, not waited
# for; without FOR UPDATE two workers could claim the same job, without SKIP LOCKED they queue
# up behind each other.
CLAIM = text(
    """
    UPDATE jobs SET status = 'running', claimed_by = :worker, attempts = attempts + 1
    WHERE id = (
        SELECT id FROM jobs WHERE status = 'queued' ORDER BY id
        FOR UPDATE SKIP LOCKED LIMIT 1
    )
    RETURNING id, kind, payload
    """
)


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]


async def enqueue(session: AsyncSession, kind: str, payload: dict[str, Any]) -> int:
    insert = text("INSERT INTO jobs (kind, payload) VALUES (:kind, :payload) RETURNING id")
    result = await session.execute(insert, {"kind": kind, "payload": json.dumps(payload)})
    return int(result.scalar_one())


async def claim(session: AsyncSession, worker: str) -> Job | None:
    """The oldest queued job, now ``running``; locked until the caller's transaction ends."""
    row = (await session.execute(CLAIM, {"worker": worker})).one_or_none()
    return Job(row.id, row.kind, row.payload) if row else None


async def finish(session: AsyncSession, job_id: int, status: str = "done") -> None:
    update = text("UPDATE jobs SET status = :status, finished_at = now() WHERE id = :id")
    await session.execute(update, {"status": status, "id": job_id})


async def status_of(session: AsyncSession, job_id: int) -> str | None:
    query = text("SELECT status FROM jobs WHERE id = :id")
    return (await session.execute(query, {"id": job_id})).scalar_one_or_none()
