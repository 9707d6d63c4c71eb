"""How much faster rollback tests run on two pytest-xdist workers than on none.

The suite is ``pg``'s (the same work as every benchmark), run with ``-n 0`` and ``-n 2`` on
unmocked's default server, which the run (its xdist controller) starts from a warm cache and every
worker attaches to. Three figures per run:

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

from pytest_runs import Run, clean_environment, lay_out, progress, timed_run

WORKER_COUNTS = (0, 2)


@dataclass(frozen=True)
class ParallelResult:
    """Runs by suite (``pg``, ``bare``) and worker count, one per round."""

    tests: int
    runs: dict[str, dict[int, list[Run]]] = field(default_factory=dict)

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
    """``repeat`` rounds of ``pg`` and bare suites of ``tests`` tests at each worker count."""
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
    result = ParallelResult(tests, {suite: {n: [] for n in WORKER_COUNTS} for suite in folders})
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
