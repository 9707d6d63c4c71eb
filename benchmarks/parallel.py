"""How much faster rollback tests run on two pytest-xdist workers than on none.

Two suites, each run with ``-n 0`` and ``-n 2`` on unmocked's default server, which the run (its
xdist controller) starts from a warm cache and every worker attaches to.

**The judged suite** (:func:`measure_work_parallel`): tests that each do ~10 ms of real database
work on ``pg`` (``suites/suite_unmocked_pg_work.py``), against a bare twin whose tests sleep as long
instead (``suites/suite_bare_sleep.py``). The row is the database suite's ``-n 2`` speed-up as a
share of the sleeping twin's: a sleep uses no core, so the twin's speed-up is what xdist gives on
this machine to tests that only wait, and a share below 100% is what the database (its server's
work on the same two cores, unmocked's per-worker set-up) takes of it. The work is sized first:

1. a 40-test ``-n 0`` run with an aggregate over 100,000 rows times each test's round trip and
   aggregate; unless their median sum is within 15% of 10 ms, the aggregate's rows are scaled so
   that it would be, and the run repeated (four runs at most);
2. the last such run's median work a test is the twin's sleep;
3. then each round runs both suites at ``-n 0`` and ``-n 2``; every database run's own median
   work a test is kept too, to show how much the work slows when two workers share the cores.

**The fast suite**, kept for reference: ``pg``'s (the same few-millisecond work as every
benchmark). Three figures per run:

- the wall time, as the user waits for it;
- the controller's test loop, which under xdist also waits for the workers to start and collect;
- the test span: first test's start to last test's end over all workers, i.e. the test loop
  without xdist's start-up, which is what the database can influence.

The same is done for bare pytest. What ``-n 2`` adds to its wall time is xdist's own overhead
(starting, importing and collecting in two workers), which every suite pays; from it and the
``-n 0`` test span follows the best speed-up ``pg``'s suite could have here (``best_speed_up``):
a ceiling that tells whether a missed target is the database's doing or xdist's.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from pytest_runs import Run, clean_environment, lay_out, progress, spans_folder, timed_run

WORKER_COUNTS = (0, 2)
WORK_SECONDS = 0.010
"""What each test of the judged suite spends on database work, as the issue sets it."""
_CALIBRATION_TESTS = 40
_FIRST_GUESS_ROWS = 100_000
# Sizing runs at most: a shared machine's load moves the aggregate's time between runs, so the
# size is corrected until a run lands within 15% of 10 ms (or the runs are used up).
_SIZING_RUNS = 4
_CLOSE_ENOUGH = 0.15


@dataclass(frozen=True)
class WorkResult:
    """The judged suite: database-work tests (``db``) and their sleeping twin (``sleep``)."""

    tests: int
    rows: int
    """Rows of the aggregate each database test runs, as sized by the calibration."""
    work_ms: float
    """Median database work a test in the calibration run: round trip plus aggregate."""
    sleep_seconds: float
    """What each twin test sleeps: ``work_ms``, in seconds."""
    runs: dict[str, dict[int, list[Run]]]
    work_ms_by_workers: dict[int, list[float]]
    """Each database run's median work a test, by worker count: the work's slow-down at -n 2."""

    def median(self, suite: str, workers: int, figure: str = "wall_seconds") -> float:
        return statistics.median(float(getattr(run, figure)) for run in self.runs[suite][workers])

    def speed_up(self, suite: str, figure: str = "wall_seconds") -> float:
        """How many times faster ``-n 2`` is than ``-n 0``."""
        return self.median(suite, 0, figure) / self.median(suite, 2, figure)

    def share_of_bare_speed_up(self, figure: str = "wall_seconds") -> float:
        """The database suite's speed-up over the sleeping twin's: the judged figure."""
        return self.speed_up("db", figure) / self.speed_up("sleep", figure)


@dataclass(frozen=True)
class ParallelResult:
    """Runs by suite (``pg``, ``bare``) and worker count, one per round."""

    tests: int
    runs: dict[str, dict[int, list[Run]]] = field(default_factory=dict)
    work: WorkResult | None = None
    """The judged suite's results; None when it was not run."""

    def median(self, suite: str, workers: int, figure: str) -> float:
        """Median of ``figure`` (``wall_seconds``, ``loop_seconds``, ``span_seconds``)."""
        return statistics.median(float(getattr(run, figure)) for run in self.runs[suite][workers])

    def speed_up(self, suite: str, figure: str = "wall_seconds") -> float:
        """How many times faster ``-n 2`` is than ``-n 0``."""
        return self.median(suite, 0, figure) / self.median(suite, 2, figure)

    def xdist_overhead(self) -> float:
        """What ``-n 2`` adds to bare pytest's wall time: xdist's workers starting, collecting."""
        return self.median("bare", 2, "wall_seconds") - self.median("bare", 0, "wall_seconds")

    def best_speed_up(self) -> float:
        """The most ``-n 2`` could give ``pg``'s suite here: the ``-n 0`` run with its test span
        halved (two workers, no cost of their own) and xdist's overhead added."""
        serial = self.median("pg", 0, "wall_seconds")
        best = serial - self.median("pg", 0, "span_seconds") / 2 + max(self.xdist_overhead(), 0.0)
        return serial / best


def measure_parallel(
    workspace: Path, migrations: Path, cache: Path, tests: int, repeat: int
) -> ParallelResult:
    """``repeat`` rounds of ``pg`` and bare suites of ``tests`` tests at each worker count, and
    as many of the judged suite and its twin (:func:`measure_work_parallel`)."""
    work = measure_work_parallel(workspace, migrations, cache, tests, repeat)
    folders = {
        "pg": lay_out(
            workspace / "parallel-pg",
            {"test_suite.py": "suite_unmocked_pg.py"},
            [f"unmocked_migrations = {migrations}"],
        ),
        "bare": lay_out(workspace / "parallel-bare", {"test_suite.py": "suite_bare.py"}),
    }
    plugins = {"pg": ["xdist.plugin", "unmocked.plugin"], "bare": ["xdist.plugin"]}
    env = {**clean_environment(), "UNMOCKED_CACHE_DIR": str(cache)}
    result = ParallelResult(
        tests, {suite: {n: [] for n in WORKER_COUNTS} for suite in folders}, work
    )
    for suite, folder in folders.items():  # untimed: the template, byte-code caches
        timed_run(folder, 1, env, plugins[suite], arguments=["-n", "2"])
    for round_number in range(1, repeat + 1):
        for suite, folder in folders.items():
            for workers in WORKER_COUNTS:
                run = timed_run(folder, tests, env, plugins[suite], arguments=["-n", str(workers)])
                result.runs[suite][workers].append(run)
                progress(
                    f"xdist: round {round_number}/{repeat}  {suite:<4} -n {workers}  "
                    f"{tests} tests  {run.wall_seconds:6.2f} s (test loop "
                    f"{run.loop_seconds:6.2f} s, span {run.span_seconds:6.2f} s)"
                )
    return result


def measure_work_parallel(
    workspace: Path, migrations: Path, cache: Path, tests: int, repeat: int
) -> WorkResult:
    """Size the database work (steps 1 and 2 of the module's docstring), then ``repeat`` rounds of
    the database suite and its sleeping twin at each worker count."""
    db = lay_out(
        workspace / "parallel-db-work",
        {"test_suite.py": "suite_unmocked_pg_work.py"},
        [f"unmocked_migrations = {migrations}"],
    )
    sleep = lay_out(workspace / "parallel-sleep", {"test_suite.py": "suite_bare_sleep.py"})
    plugins = {"db": ["xdist.plugin", "unmocked.plugin"], "sleep": ["xdist.plugin"]}
    env = {**clean_environment(), "UNMOCKED_CACHE_DIR": str(cache)}

    def work_run(tests: int, rows: int, workers: int) -> tuple[Run, list[tuple[float, float]]]:
        run = timed_run(
            db,
            tests,
            {**env, "BENCH_WORK_ROWS": str(rows)},
            plugins["db"],
            arguments=["-n", str(workers)],
        )
        return run, work_timings(db)

    rows, work_seconds = _FIRST_GUESS_ROWS, 0.0
    for sizing_run in range(1, _SIZING_RUNS + 1):
        _, timings = work_run(_CALIBRATION_TESTS, rows, 0)
        round_trip = statistics.median(timing[0] for timing in timings)
        aggregate = statistics.median(timing[1] for timing in timings)
        work_seconds = statistics.median(sum(timing) for timing in timings)
        close = abs(work_seconds - WORK_SECONDS) <= _CLOSE_ENOUGH * WORK_SECONDS
        if close or sizing_run == _SIZING_RUNS:
            break
        # The aggregate's time grows with its rows; it takes what the round trip leaves of 10 ms.
        rows = max(1, round(rows * max(WORK_SECONDS - round_trip, 0.001) / aggregate))
    progress(
        f"xdist: work sized to {rows} rows: {work_seconds * 1000:.2f} ms a test "
        f"(round trip {round_trip * 1000:.2f} ms)"
    )
    sleep_env = {**env, "BENCH_SLEEP_SECONDS": f"{work_seconds:.6f}"}
    timed_run(sleep, 1, sleep_env, plugins["sleep"], arguments=["-n", "2"])  # byte-code caches
    runs: dict[str, dict[int, list[Run]]] = {
        suite: {n: [] for n in WORKER_COUNTS} for suite in ("db", "sleep")
    }
    work_by_workers: dict[int, list[float]] = {n: [] for n in WORKER_COUNTS}
    for round_number in range(1, repeat + 1):
        for workers in WORKER_COUNTS:
            run, timings = work_run(tests, rows, workers)
            runs["db"][workers].append(run)
            work_by_workers[workers].append(statistics.median(map(sum, timings)) * 1000)
            slept = timed_run(
                sleep, tests, sleep_env, plugins["sleep"], arguments=["-n", str(workers)]
            )
            runs["sleep"][workers].append(slept)
            progress(
                f"xdist: round {round_number}/{repeat}  -n {workers}  {tests} tests: database "
                f"work {run.wall_seconds:6.2f} s ({work_by_workers[workers][-1]:.2f} ms of work "
                f"a test), sleep {slept.wall_seconds:6.2f} s"
            )
    return WorkResult(
        tests=tests,
        rows=rows,
        work_ms=work_seconds * 1000,
        sleep_seconds=work_seconds,
        runs=runs,
        work_ms_by_workers=work_by_workers,
    )


def work_timings(folder: Path) -> list[tuple[float, float]]:
    """Every database test's (round trip, aggregate) seconds of the folder's last run."""
    timings = []
    for path in spans_folder(folder).glob("work-*.txt"):
        for line in path.read_text(encoding="utf-8").splitlines():
            round_trip, aggregate = line.split()
            timings.append((float(round_trip), float(aggregate)))
    return timings
