"""What the benchmark commands share: the facts about the machine, the JSON file, the exit.

A figure means little without the load it was taken under, so every JSON report starts with the
same facts; and a failed pytest run, a server that would not start or a refused connection end
the command with one line rather than a traceback.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import psycopg

from pytest_runs import BenchmarkError
from schema import TABLE_COUNT
from unmocked.errors import UnmockedError


def load_average() -> float:
    """The one-minute load average: other work on the machine shows in every figure."""
    return os.getloadavg()[0]


def write_report(
    path: Path, server: str, loads: tuple[float, float], figures: dict[str, Any]
) -> None:
    """Write ``figures`` to ``path`` as JSON, after the facts a reader needs to weigh them."""
    report = {
        "server": server,
        "tables": TABLE_COUNT,
        "cpus": os.cpu_count(),
        "load_average": {"before": loads[0], "after": loads[1]},
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
        **figures,
    }
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def run_command(main: Callable[[], int]) -> NoReturn:
    """Run a benchmark's ``main`` and exit with its status, or with one line saying what failed."""
    try:
        sys.exit(main())
    except (BenchmarkError, UnmockedError, psycopg.OperationalError) as error:
        sys.exit(f"benchmark failed: {error}")
