"""Lay out a benchmark suite in a folder and time a real pytest run of it in a subprocess.

Every figure the benchmarks report comes from such runs, as a user would start them: a fresh
Python, pytest with only the plugins the suite needs, the test loop timed from inside by
``suites/timing_conftest.py``. Each benchmark module (per-test costs, start-up, xdist, memory)
decides what to run; this module only runs it and checks that every test passed.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SUITES = Path(__file__).resolve().parent / "suites"
# Modules every suite may import, copied next to its test modules.
_SUPPORT = ("bench_work.py", "bench_orm.py")


class BenchmarkError(Exception):
    """A pytest run did not pass all its tests; the message holds the end of its output."""


@dataclass(frozen=True)
class Run:
    """One pytest run: its wall time, and the part of it spent in the test loop."""

    wall_seconds: float
    loop_seconds: float
    span_seconds: float
    """From the first test's start to the last test's end, over all processes (xdist workers
    included): the test loop without the workers' start-up and collection."""


def lay_out(folder: Path, suites: Mapping[str, str], ini: Sequence[str] = ()) -> Path:
    """Make ``folder`` with the suites (test file name -> file in ``suites/``) and a pytest.ini."""
    folder.mkdir(parents=True)
    for test_file, suite in suites.items():
        shutil.copy(SUITES / suite, folder / test_file)
    for support in _SUPPORT:
        shutil.copy(SUITES / support, folder / support)
    shutil.copy(SUITES / "timing_conftest.py", folder / "conftest.py")
    (folder / "pytest.ini").write_text("\n".join(["[pytest]", *ini]) + "\n", encoding="utf-8")
    return folder


def clean_environment() -> dict[str, str]:
    """The user's environment minus anything that would change the runs; plugin autoload off.

    Every plugin installed in the venv otherwise runs in every suite (unmocked's and
    pytest-postgresql's too, pytest-randomly reorders tests, and faker's and pytest-asyncio's
    per-test hooks cost more than a rollback), so each run loads only its own with ``-p``.
    ``PYTHONDONTWRITEBYTECODE`` goes too: with it, the modules of this checkout (an editable
    install, which pip does not byte-compile as it does a wheel's) were compiled again by every
    run, ~0.1 s of a one-test run that no user of an installed unmocked pays.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UNMOCKED_", "PYTEST_")) and key != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


def timed_run(
    folder: Path,
    tests: int,
    env: Mapping[str, str],
    plugins: Sequence[str] = (),
    *,
    arguments: Sequence[str] = (),
    expected: int | None = None,
    account: str | None = None,
    interpreter: str = sys.executable,
    during: Callable[[subprocess.Popen[str]], None] | None = None,
    wrapper: Sequence[str] = (),
) -> Run:
    """Time one pytest run with ``BENCH_TESTS=tests``; raise unless all ``expected`` tests passed.

    ``account`` runs it as that user (PostgreSQL's own tools refuse to run as root), with
    ``interpreter`` (a Python that user may execute); ``during`` is called with the running
    process, for samplers that watch it, and must return once it ends; ``wrapper`` is a command
    that runs the interpreter (valgrind, to count its instructions).
    """
    loop_file = folder / "loop-seconds.txt"
    span_folder = spans_folder(folder)
    loop_file.unlink(missing_ok=True)
    shutil.rmtree(span_folder, ignore_errors=True)
    span_folder.mkdir()
    command = [*wrapper, interpreter, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    for plugin in plugins:
        command += ["-p", plugin]
    run_env = {
        **env,
        "BENCH_TESTS": str(tests),
        "BENCH_LOOP_FILE": str(loop_file),
        "BENCH_SPAN_DIR": str(span_folder),
    }
    user: dict[str, object] = {}
    if account is not None:
        entry = pwd.getpwnam(account)
        user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        run_env["HOME"] = str(folder)
        shutil.chown(span_folder, entry.pw_uid, entry.pw_gid)
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, *arguments],
        cwd=folder,
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **user,  # type: ignore[call-overload]
    )
    if during is not None:
        during(process)
    output, _ = process.communicate()
    wall_seconds = time.perf_counter() - started
    _check_passed(folder, output, process.returncode, tests if expected is None else expected)
    return Run(wall_seconds, float(loop_file.read_text(encoding="utf-8")), _span(span_folder))


def spans_folder(folder: Path) -> Path:
    """Where a run's processes write their files (``BENCH_SPAN_DIR``); emptied by each run."""
    return folder / "spans"


def _check_passed(folder: Path, output: str, returncode: int, expected: int) -> None:
    passed = re.search(r"(\d+) passed", output)
    clean = not re.search(r"\d+ (failed|errors?)\b", output)
    if returncode != 0 or not passed or int(passed.group(1)) != expected or not clean:
        lines = output.strip().splitlines()
        raise BenchmarkError(
            f"pytest did not pass all {expected} tests (exit {returncode}) in {folder}. "
            "Its last lines:\n" + "\n".join(lines[-25:])
        )


def _span(span_folder: Path) -> float:
    """Earliest first-test start to latest last-test end, over every process that ran tests."""
    starts, ends = [], []
    for path in span_folder.glob("span-*.txt"):
        first, last = path.read_text(encoding="utf-8").split()
        starts.append(float(first))
        ends.append(float(last))
    return max(ends) - min(starts) if starts else 0.0


def progress(line: str) -> None:
    """Progress goes to stderr, so that stdout holds only the results."""
    print(line, file=sys.stderr, flush=True)
