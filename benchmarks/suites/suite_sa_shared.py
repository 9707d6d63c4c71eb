"""The ORM work with no isolation: a plain Session per test on one long-lived connection.

The floor for ``sa_session``, as ``suite_shared.py`` is for ``pg``: real commits, never cleaned up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from bench_orm import orm_round_trip
from sqlalchemy import Connection, create_engine
from sqlalchemy.orm import Session


@pytest.fixture(scope="session")
def shared_connection() -> Iterator[Connection]:
    url = os.environ["BENCH_SHARED_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_round_trip(shared_connection: Connection, number: int) -> None:
    with Session(bind=shared_connection) as session:
        orm_round_trip(session, number)
