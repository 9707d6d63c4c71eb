"""Where one test's time goes: every round trip unmocked makes for a ``pg``, ``sa_session`` and
``pg_url`` test, and what the server spends on each.

Run it from the project root::

    .venv/bin/python benchmarks/breakdown.py [--tests 40] [--json PATH]

Nothing in ``src/`` is touched or patched: everything is read from the outside.

1. A scratch server is started through unmocked's own API, with the same test-tuned settings as
   ``isolation.py``'s, plus a server log of every statement's duration
   (``log_min_duration_statement = 0``) and every connection's set-up (``log_connections =
   setup_durations``: fork, authentication, total) and end.
2. On it, ``isolation.py``'s target (the 80-table schema; its ``environment``) and one pytest run
   of ``--tests`` tests for each of ``pg``, ``sa_session`` and ``pg_url``, each loading
   ``suites/phase_timing.py``, which writes pytest's own set-up / call / teardown times.
3. The part of the server log each run wrote is parsed into statements (a simple query is one
   round trip; an extended one's parse, bind and execute are one round trip together) by backend.
   For ``pg`` and ``sa_session``, the test's connection is cut into one cycle a test at the test's
   first ``INSERT``: the work's own statements, the statements ``commit()`` sends, and what ends
   the test and begins the next. For ``pg_url``, the log is cut at each test's new backend: its
   set-up, its statements (a new backend's first statements load the catalog caches for the
   tables they touch), and unmocked's own sessions meanwhile (handing out, ending sessions and
   renaming, the reset).
4. The first and last cycles are left out (a session's first use, and its end); each statement's
   server time is the median over the rest.
5. Two probes on the same server: a ``SELECT 1`` round trip from Python (what one round trip costs
   here, besides the server's work) and ``ALTER DATABASE ... RENAME`` alone.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psycopg
from psycopg import sql

from caches import scratch_cache
from cli import load_average, run_command, write_report
from isolation import MODES, Mode, environment, lay_out_mode, prepared_target
from pytest_runs import SUITES, progress, spans_folder, timed_run
from schema import TABLE_COUNT
from unmocked.servers import start
from unmocked.settings import Settings

# Each line starts with a mark no statement holds, so that continuation lines are told apart.
_PREFIX = "@@%n|%p|%a|%d|"
_LOGGING = (
    ("log_min_duration_statement", "0"),
    ("log_connections", "setup_durations"),
    ("log_disconnections", "on"),
    ("log_line_prefix", _PREFIX),
)
_LINE = re.compile(r"@@(?P<at>[\d.]+)\|(?P<pid>\d+)\|(?P<app>[^|]*)\|(?P<db>[^|]*)\|(?P<text>.*)")
_DURATION = re.compile(
    r"LOG:  duration: (?P<ms>[\d.]+) ms  (?P<kind>statement|parse|bind|execute)[^:]*: (?P<sql>.*)",
    re.DOTALL,
)
_READY = re.compile(
    r"connection ready: setup total=(?P<total>[\d.]+) ms, fork=(?P<fork>[\d.]+) ms, "
    r"authentication=(?P<auth>[\d.]+) ms"
)
_WORK = re.compile(r"^(INSERT INTO entity_0[123]\b|SELECT .*\bentity_0[123]\b)", re.DOTALL)
_PROFILED = ("pg", "sa_session", "pg_url")
_SKIPPED_CYCLES = 2


@dataclass(frozen=True)
class Statement:
    """One round trip as the server logged it: its text and the server's time for it."""

    line: int
    """Its place in the log: the order statements ended in, over all backends."""
    pid: int
    application: str
    database: str
    text: str
    server_ms: float

    @property
    def own(self) -> bool:
        """Sent on one of unmocked's own sessions (admin, lease, reset), by their name."""
        return self.application.startswith("unmocked ")

    @property
    def work(self) -> bool:
        """Sent by the test's own work (``bench_work``, ``bench_orm``), not by unmocked."""
        return bool(_WORK.match(self.text))

    @property
    def short(self) -> str:
        """The text on one line, abbreviated to what tells it apart."""
        text = " ".join(self.text.split())
        return text if len(text) <= 72 else text[:69] + "..."


@dataclass(frozen=True)
class Backend:
    """A connection as the log saw it: when it began (log line) and what its set-up cost."""

    pid: int
    line: int
    database: str
    setup_ms: float
    fork_ms: float
    authentication_ms: float


@dataclass(frozen=True)
class Log:
    statements: list[Statement]
    backends: dict[int, Backend]


@dataclass(frozen=True)
class BreakdownRow:
    """One line of the table: a phase, a statement, how often a test sends it, server ms."""

    phase: str
    statement: str
    per_test: float
    server_ms: float


@dataclass(frozen=True)
class Breakdown:
    """One profiled mode: its rows, pytest's own phase times, and the totals."""

    mode: str
    rows: list[BreakdownRow]
    pytest_ms: dict[str, float]
    """Median set-up, call and teardown a test, as pytest timed them (client side)."""
    notes: list[str]


# -- the server and its log ---------------------------------------------------------------------


@contextmanager
def logging_server(cache: Path) -> Iterator[tuple[str, Path]]:
    """An embedded server logging every statement; yields its admin URL and its log file."""
    settings = replace(Settings(provider="embedded"), cache_dir=cache, server_settings=_LOGGING)
    running = start(settings)
    try:
        data_dir = running.server.data_dir
        if data_dir is None:  # an embedded server always has one; this tells mypy
            raise RuntimeError("the embedded server has no data folder")
        yield running.server.url, data_dir.parent / "server.log"
    finally:
        running.close()


def parse_log(text: str) -> Log:
    """Statements (parse and bind folded into their execute) and connections, in log order."""
    entries: list[tuple[int, re.Match[str], list[str]]] = []
    for line in text.splitlines():
        found = _LINE.match(line)
        if found:
            entries.append((len(entries), found, [found["text"]]))
        elif entries:  # a statement's next line
            entries[-1][2].append(line.removeprefix("\t"))
    statements: list[Statement] = []
    backends: dict[int, Backend] = {}
    pending: dict[int, float] = {}  # parse + bind so far, by backend
    for index, found, lines in entries:
        pid, message = int(found["pid"]), "\n".join(lines)
        duration = _DURATION.match(message)
        ready = _READY.search(message)
        if duration:
            ms = float(duration["ms"])
            if duration["kind"] in ("parse", "bind"):
                pending[pid] = pending.get(pid, 0.0) + ms
                continue
            statements.append(
                Statement(
                    index,
                    pid,
                    found["app"],
                    found["db"],
                    duration["sql"].strip(),
                    ms + pending.pop(pid, 0.0),
                )
            )
        elif ready:
            backends[pid] = Backend(
                pid,
                index,
                found["db"],
                float(ready["total"]),
                float(ready["fork"]),
                float(ready["auth"]),
            )
    return Log(statements, backends)


# -- cutting the log into tests -----------------------------------------------------------------


def rollback_breakdown(log: Log, mode: str, pytest_ms: dict[str, float]) -> Breakdown:
    """``pg`` and ``sa_session``: the test's connection cut into cycles at the first INSERT."""
    first_insert = next(s for s in log.statements if s.text.startswith("INSERT INTO entity_01"))
    connection = [s for s in log.statements if s.pid == first_insert.pid]
    starts = [i for i, s in enumerate(connection) if s.text.startswith("INSERT INTO entity_01")]
    cycles = [connection[a:b] for a, b in itertools.pairwise(starts)]
    kept = cycles[_SKIPPED_CYCLES:]
    labelled = [_label_rollback_cycle(cycle) for cycle in kept]
    rows = _median_rows(labelled)
    others = [
        s
        for s in log.statements
        if s.pid != first_insert.pid and kept and kept[0][0].line <= s.line <= kept[-1][-1].line
    ]
    notes = [
        f"{len(kept)} tests' cycles; other sessions meanwhile: "
        f"{len(others) / max(len(kept), 1):.2f} statements a test "
        f"({sum(s.server_ms for s in others) / max(len(kept), 1):.3f} ms server)"
    ]
    return Breakdown(mode, rows, pytest_ms, notes)


def _label_rollback_cycle(cycle: list[Statement]) -> list[tuple[str, Statement]]:
    """Each statement of one test's cycle with its phase: the work's own, ``commit()``'s (after the
    last write, before the read-back), those among the work's writes, and the test's end and the
    next one's beginning (after the read-back)."""
    last_write = max(i for i, s in enumerate(cycle) if s.work and s.text.startswith("INSERT"))
    read_back = next(
        i for i, s in enumerate(cycle) if i > last_write and s.work and s.text.startswith("SELECT")
    )
    labelled = []
    for index, statement in enumerate(cycle):
        if statement.work:
            phase = "the test's work"
        elif index < last_write:
            phase = "unmocked/ORM among the writes"
        elif index < read_back:
            phase = "commit()"
        else:
            phase = "end of test + begin of next"
        labelled.append((phase, statement))
    return labelled


def fresh_breakdown(
    log: Log, pytest_ms: dict[str, float], warm: Breakdown | None, rename: float
) -> Breakdown:
    """``pg_url``: the log cut at each test's new backend (the one that sends the work)."""
    test_pids = sorted(
        {s.pid for s in log.statements if s.work and s.pid in log.backends},
        key=lambda pid: log.backends[pid].line,
    )
    bounds = [log.backends[pid].line for pid in test_pids]
    segments = []
    for number, pid in enumerate(test_pids[:-1]):
        inside = [s for s in log.statements if bounds[number] <= s.line < bounds[number + 1]]
        segments.append((pid, inside))
    kept = segments[_SKIPPED_CYCLES:]
    labelled = []
    for pid, inside in kept:
        labelled.append([(_fresh_phase(s, pid), s) for s in inside])
    rows = _median_rows(labelled, by_text=True)
    backends = [log.backends[pid] for pid, _ in kept]
    setup = statistics.median(b.setup_ms for b in backends)
    fork = statistics.median(b.fork_ms for b in backends)
    auth = statistics.median(b.authentication_ms for b in backends)
    rows.insert(
        0,
        BreakdownRow(
            "test's first connection",
            f"backend set-up (fork {fork:.2f} ms, authentication {auth:.2f} ms, total)",
            1.0,
            setup,
        ),
    )
    # The reset runs on a session of its own, opened for it: a backend set-up of its own too.
    sent_by = {statement.pid: statement for statement in log.statements}
    resetting = [
        backend
        for backend in log.backends.values()
        if backend.pid in sent_by
        and _fresh_phase(sent_by[backend.pid], -1).startswith("reset")
        and kept
        and kept[0][1][0].line <= backend.line <= kept[-1][1][-1].line
    ]
    if resetting:
        rows.append(
            BreakdownRow(
                "reset (its own session, beside the next test)",
                "backend set-up of the reset's session (total)",
                len(resetting) / len(kept),
                statistics.median(backend.setup_ms for backend in resetting),
            )
        )
    notes = [f"{len(kept)} tests"]
    cold = sum(r.server_ms * r.per_test for r in rows if r.phase == "test's first connection")
    if warm is not None:
        warm_work = sum(r.server_ms for r in warm.rows if r.phase == "the test's work")
        cold_work = sum(
            r.server_ms * r.per_test
            for r in rows
            if r.phase == "test's first connection" and r.statement.startswith(("INSERT", "SELECT"))
        )
        notes.append(
            f"the work's statements on the new backend: {cold_work:.2f} ms server, against "
            f"{warm_work:.2f} ms on pg's warm backend: {cold_work - warm_work:.2f} ms of catalog "
            "and relation caches, foreign-key check plans and the like a new backend builds"
        )
    notes.append(f"the test's backend in all: {cold:.2f} ms server (set-up included)")
    ending = [r.server_ms for r in rows if r.phase == "ending sessions + rename"]
    if ending:
        notes.append(
            f"ending sessions + rename is one DO block, {ending[0]:.2f} ms; the rename alone "
            f"takes {rename:.2f} ms (probe, client side), so ending the test's sessions and "
            f"waiting for them to go is about {ending[0] - rename:.2f} ms"
        )
    return Breakdown("pg_url", rows, pytest_ms, notes)


def _fresh_phase(statement: Statement, test_pid: int) -> str:
    if statement.pid == test_pid:
        return "test's first connection"
    if not statement.own:
        return "another session of the test's"
    if "pg_terminate_backend" in statement.text and "RENAME" in statement.text:
        return "ending sessions + rename"
    if statement.database.startswith("postgres") or "template" in statement.database:
        return "admin: handing out, checks"
    return "reset (its own session, beside the next test)"


def _median_rows(
    cycles: list[list[tuple[str, Statement]]], *, by_text: bool = False
) -> list[BreakdownRow]:
    """One row per (phase, statement) in the order of the most common cycle: how often a test
    sends it and its median server time. ``by_text`` groups by text alone (statements from
    several sessions interleave differently from test to test)."""
    if not cycles:
        return []
    grouped: dict[tuple[str, str], list[float]] = {}
    order: list[tuple[str, str]] = []
    for cycle in cycles:
        seen: Counter[tuple[str, str]] = Counter()
        for phase, statement in cycle:
            key = (phase, statement.short)
            seen[key] += 1
            slot = key if by_text else (phase, f"{statement.short}#{seen[key]}")
            if slot not in grouped:
                grouped[slot] = []
                order.append(slot)
            grouped[slot].append(statement.server_ms)
    rows = []
    for slot in order:
        times = grouped[slot]
        rows.append(
            BreakdownRow(
                slot[0],
                slot[1].rsplit("#", 1)[0] if not by_text else slot[1],
                len(times) / len(cycles),
                statistics.median(times),
            )
        )
    phase_order = {phase: number for number, (phase, _) in enumerate(order)}
    return sorted(rows, key=lambda row: phase_order[row.phase])


# -- probes -------------------------------------------------------------------------------------


def round_trip_ms(admin_url: str, times: int = 2000) -> float:
    """Median client time of ``SELECT 1``: what a round trip costs here besides the server."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET log_min_duration_statement = -1")
        seconds = []
        for _ in range(times):
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000


def rename_ms(admin_url: str, times: int = 20) -> float:
    """Median client time of ``ALTER DATABASE ... RENAME`` of an empty database, alone."""
    names = ["bench_rename_a", "bench_rename_b"]
    seconds = []
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET log_min_duration_statement = -1")
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names[0])))
        try:
            for number in range(times):
                old, new = names[number % 2], names[(number + 1) % 2]
                started = time.perf_counter()
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(old), sql.Identifier(new)
                    )
                )
                seconds.append(time.perf_counter() - started)
        finally:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(names[times % 2])))
    return statistics.median(seconds) * 1000


# -- running it ---------------------------------------------------------------------------------


def pytest_phases(folder: Path) -> dict[str, float]:
    """Median set-up, call and teardown of a run's tests, in ms, from ``phase_timing``."""
    by_phase: dict[str, list[float]] = {"setup": [], "call": [], "teardown": []}
    for path in spans_folder(folder).glob("phases-*.txt"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines[3 * _SKIPPED_CYCLES :]:
            when, _, _, duration = line.split()
            by_phase[when].append(float(duration) * 1000)
    return {when: statistics.median(values) for when, values in by_phase.items() if values}


def profile(
    admin_url: str, log_file: Path, workspace: Path, tests: int, rename: float
) -> list[Breakdown]:
    """One logged pytest run per profiled mode, each cut out of the log and broken down."""
    modes: dict[str, Mode] = {mode.name: mode for mode in MODES if mode.name in _PROFILED}
    results: dict[str, Breakdown] = {}
    with prepared_target(admin_url, workspace) as target:
        env = environment(target)
        for name in _PROFILED:
            mode = modes[name]
            folder = lay_out_mode(mode, target, workspace)
            shutil.copy(SUITES / "phase_timing.py", folder)
            plugins = [*mode.plugins, "phase_timing"]
            timed_run(folder, 1, env, plugins)  # the template, byte-code caches
            offset = log_file.stat().st_size
            run = timed_run(folder, tests, env, plugins)
            time.sleep(0.5)  # the last reset's lines
            with log_file.open(encoding="utf-8", errors="replace") as handle:
                handle.seek(offset)
                log = parse_log(handle.read())
            progress(f"breakdown: {name}: {tests} tests in {run.wall_seconds:.2f} s")
            phases = pytest_phases(folder)
            if name == "pg_url":
                results[name] = fresh_breakdown(log, phases, results.get("pg"), rename)
            else:
                results[name] = rollback_breakdown(log, name, phases)
    return list(results.values())


def render(breakdown: Breakdown, round_trip: float) -> str:
    """One mode's table, its totals by phase and the client's side from pytest."""
    lines = [f"{breakdown.mode}: one test", ""]
    header = ("phase", "statement (one round trip each)", "a test", "server ms")
    cells = [header] + [
        (row.phase, row.statement, f"{row.per_test:.2f}", f"{row.server_ms:.3f}")
        for row in breakdown.rows
    ]
    widths = [max(len(cell[column]) for cell in cells) for column in range(4)]
    for number, cell in enumerate(cells):
        lines.append(
            "  ".join(
                text.rjust(width) if column >= 2 else text.ljust(width)
                for column, (text, width) in enumerate(zip(cell, widths, strict=True))
            ).rstrip()
        )
        if number == 0:
            lines.append("-" * len(lines[-1]))
    lines.append("")
    totals: dict[str, tuple[float, float]] = {}
    for row in breakdown.rows:
        trips, server = totals.get(row.phase, (0.0, 0.0))
        totals[row.phase] = (trips + row.per_test, server + row.server_ms * row.per_test)
    for phase, (trips, server) in totals.items():
        lines.append(
            f"  {phase}: {trips:.1f} round trips, {server:.3f} ms server, "
            f"~{trips * round_trip:.3f} ms in round trips at {round_trip:.3f} ms each"
        )
    lines.append(
        "  pytest (client side, median a test): "
        + ", ".join(f"{when} {ms:.2f} ms" for when, ms in breakdown.pytest_ms.items())
    )
    lines += [f"  {note}" for note in breakdown.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Every statement unmocked sends for one test.")
    parser.add_argument("--tests", type=int, default=40, help="tests a profiled run (40)")
    parser.add_argument("--json", type=Path, help="also write the breakdowns to this file")
    arguments = parser.parse_args(argv)
    if arguments.tests < _SKIPPED_CYCLES + 3:
        parser.error(f"--tests must be at least {_SKIPPED_CYCLES + 3}")
    load_before = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="unmocked-breakdown-") as scratch,
        scratch_cache() as cache,
        logging_server(cache) as (admin_url, log_file),
    ):
        round_trip = round_trip_ms(admin_url)
        rename = rename_ms(admin_url)
        breakdowns = profile(admin_url, log_file, Path(scratch), arguments.tests, rename)
        with psycopg.connect(admin_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
    load_after = load_average()
    description = f"PostgreSQL {version[0] if version else '?'} (embedded, scratch, logging)"
    print(
        f"{description}, {TABLE_COUNT} tables, load average {load_before:.1f} before and "
        f"{load_after:.1f} after; {arguments.tests} tests a mode, the first "
        f"{_SKIPPED_CYCLES} and the last left out; server ms = the server log's duration "
        "(parse + bind + execute for an extended query).\n"
        f"Probes: SELECT 1 round trip {round_trip:.3f} ms (client, median of 2000); "
        f"ALTER DATABASE ... RENAME alone {rename:.2f} ms (client, median of 20).\n"
    )
    for breakdown in breakdowns:
        print(render(breakdown, round_trip) + "\n")
    if arguments.json:
        figures = {
            "round_trip_ms": round_trip,
            "rename_ms": rename,
            "breakdowns": [asdict(breakdown) for breakdown in breakdowns],
        }
        write_report(arguments.json, description, (load_before, load_after), figures)
    return 0


if __name__ == "__main__":
    run_command(main)
