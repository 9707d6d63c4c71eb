"""Bare pytest: the same tests with no database, the floor every other mode is measured from."""

from __future__ import annotations

import os

import pytest
from bench_work import python_round_trip


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_round_trip(number: int) -> None:
    python_round_trip(number)
