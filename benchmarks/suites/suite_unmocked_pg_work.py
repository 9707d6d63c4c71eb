"""unmocked's ``pg`` with ~10 ms of database work a test: the xdist suite's database side.

Each test does the usual round trip (three inserts with foreign keys, a commit, a two-join read)
and then one aggregate the server computes over ``BENCH_WORK_ROWS`` generated rows, which
``parallel.py`` sizes so that the whole takes about 10 ms here. No ``pg_sleep``: the server must
really work, on the machine's cores, as a database-heavy suite's server does. Each test's work is
timed and written, per process, to ``BENCH_SPAN_DIR/work-<pid>.txt`` (round trip, aggregate), so
that the sleeping twin (``suite_bare_sleep.py``) can sleep as long.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from bench_work import database_round_trip

AGGREGATE = "SELECT sum(hashint8(g)) FROM generate_series(1::bigint, %s) AS g"

_timings: list[tuple[float, float]] = []


@pytest.fixture(scope="session", autouse=True)
def written_timings() -> Iterator[None]:
    yield
    lines = "".join(f"{round_trip:.6f} {aggregate:.6f}\n" for round_trip, aggregate in _timings)
    (Path(os.environ["BENCH_SPAN_DIR"]) / f"work-{os.getpid()}.txt").write_text(lines)


@pytest.mark.parametrize("number", range(int(os.environ["BENCH_TESTS"])))
def test_database_work(pg: psycopg.Connection[Any], number: int) -> None:
    started = time.perf_counter()
    database_round_trip(pg, number)
    between = time.perf_counter()
    assert pg.execute(AGGREGATE, (int(os.environ["BENCH_WORK_ROWS"]),)).fetchone() is not None
    _timings.append((between - started, time.perf_counter() - between))
