"""unmocked's ``sa_session``: the ORM work inside the test's outer transaction, rolled back."""

from __future__ import annotations

import os

import pytest
from bench_orm import orm_round_trip
from sqlalchemy.orm import Session


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_round_trip(sa_session: Session, number: int) -> None:
    orm_round_trip(sa_session, number)
