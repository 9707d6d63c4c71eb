"""Copied into every mode's folder as ``conftest.py``: times the test loop from inside pytest.

The wall time of a whole run also holds Python's start-up, imports and collection, which vary by a
second or more on a busy machine and would drown a cost of a millisecond per test. The test loop
(every test's set-up, call and teardown, session fixtures included) is timed here and written to
the file ``BENCH_LOOP_FILE`` names, for the benchmark to take per-test costs from.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from pathlib import Path

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        seconds = time.perf_counter() - started
        Path(os.environ["BENCH_LOOP_FILE"]).write_text(f"{seconds:.6f}\n", encoding="utf-8")
