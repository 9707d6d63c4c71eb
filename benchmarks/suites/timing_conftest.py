"""Copied into every benchmark folder as ``conftest.py``: times the test loop from inside pytest.

The wall time of a whole run also holds Python's start-up, imports and collection, which vary by a
second or more on a busy machine and would drown a cost of a millisecond per test. Two times are
written for the benchmark:

- the test loop (every test's set-up, call and teardown, session fixtures included), to the file
  ``BENCH_LOOP_FILE`` names, by the process that runs the loop: under xdist the controller, whose
  loop also waits for the workers to start and collect;
- the wall-clock moments the first test started and the last one ended, one file per process in
  ``BENCH_SPAN_DIR``, so that the span over all xdist workers excludes their start-up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from pathlib import Path

import pytest

_moments: list[float] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        seconds = time.perf_counter() - started
        if not hasattr(session.config, "workerinput"):
            Path(os.environ["BENCH_LOOP_FILE"]).write_text(f"{seconds:.6f}\n", encoding="utf-8")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    if not _moments:
        _moments.append(time.time())
    try:
        return (yield)
    finally:
        del _moments[1:]
        _moments.append(time.time())


def pytest_sessionfinish(session: pytest.Session) -> None:
    if len(_moments) == 2:
        span_file = Path(os.environ["BENCH_SPAN_DIR"]) / f"span-{os.getpid()}.txt"
        span_file.write_text(f"{_moments[0]:.6f} {_moments[1]:.6f}\n", encoding="utf-8")
