"""Bare pytest with the database work replaced by a sleep as long: the xdist suite's twin.

``BENCH_SLEEP_SECONDS`` is the median time ``suite_unmocked_pg_work.py``'s tests spent on their
database work (measured by ``parallel.py`` beforehand). A sleep uses no core, so this suite's
``-n 2`` speed-up is what xdist gives tests that only wait: the most database tests could get.
"""

from __future__ import annotations

import os
import time

import pytest
from bench_work import python_round_trip


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_database_work(number: int) -> None:
    python_round_trip(number)
    time.sleep(float(os.environ["BENCH_SLEEP_SECONDS"]))
