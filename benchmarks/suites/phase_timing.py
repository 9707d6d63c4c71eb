"""A pytest plugin for ``breakdown.py``: each test's set-up, call and teardown as pytest timed them.

Loaded with ``-p phase_timing`` next to ``timing_conftest.py``. pytest already times every phase
of every test (``TestReport.duration``); this writes them, with their wall-clock bounds, to
``BENCH_SPAN_DIR/phases-<pid>.txt`` at the end, so that the client's side of a fixture's cost
(handing out, ending) can be put beside what the server log says the server did meanwhile.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_phases: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _phases.append(f"{report.when} {report.start:.6f} {report.stop:.6f} {report.duration:.6f}\n")


def pytest_sessionfinish(session: pytest.Session) -> None:
    (Path(os.environ["BENCH_SPAN_DIR"]) / f"phases-{os.getpid()}.txt").write_text("".join(_phases))
