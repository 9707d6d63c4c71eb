"""unmocked's ``sa_session`` with the ``queries`` fixture recording every statement the ORM
sends (each with a walk up SQLAlchemy's stack to the test's line)."""

from __future__ import annotations

import os

import pytest
from bench_orm import orm_round_trip
from sqlalchemy.orm import Session

from unmocked.checks import Queries


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_round_trip(sa_session: Session, queries: Queries, number: int) -> None:
    orm_round_trip(sa_session, number)
