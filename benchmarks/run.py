"""Every row of the performance targets, unmocked beside its peer, in one run.

Run it from the project root::

    .venv/bin/python benchmarks/run.py [--quick] [--json PATH] [--chart FILE.png]

It measures, in this order, with real pytest runs in subprocesses (see each module's docstring):

1. start-up (``startup.py``): one-test runs, cold (empty cache) and warm, and pytest-postgresql's
   cold start, each minus a bare one-test run;
2. xdist (``parallel.py``): tests of ~10 ms of database work at ``-n 0`` and ``-n 2`` against bare
   tests sleeping as long (the judged row), and the fast ``pg`` tests with bare pytest's ceiling;
3. memory (``memory.py``): the server's peak PSS and RSS during a two-worker run;
4. per-test costs (``isolation.py``): every isolation mode on one server and one 80-table schema.

Then it prints the per-test table and the target table: row, peer figure, unmocked figure, ratio,
target, and met or missed by how much; ``--chart`` also draws the per-test costs (``chart.py``).
Steps 2 to 4 share one throwaway cache (so step 2 starts warm); everything the run creates is
deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import chart
from caches import scratch_cache
from cli import load_average, run_command, write_report
from isolation import MODES, per_test_costs, server_url, table
from memory import measure_memory
from parallel import measure_parallel
from pytest_runs import progress
from report import memory_rows, parallel_rows, per_test_rows, render, startup_rows
from schema import TABLE_COUNT, write_migrations
from startup import measure_startup


@dataclass(frozen=True)
class Sizes:
    """How many tests and repeats each part runs."""

    per_test_small: int
    per_test_large: int
    per_test_repeat: int
    startup_repeat: int
    xdist_tests: int
    xdist_repeat: int
    memory_tests: int
    """Of each of ``pg`` and ``pg_url``."""


FULL = Sizes(10, 200, 3, 5, 400, 3, 100)
# Enough to see that every part works and roughly where it lands, in under two minutes.
QUICK = Sizes(5, 30, 1, 1, 60, 1, 20)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="unmocked's performance targets against its peers, measured in one run."
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer tests and one repeat: a check, not figures"
    )
    parser.add_argument(
        "--chart",
        type=Path,
        metavar="FILE.png",
        help="also draw the per-test costs, log scale (needs matplotlib: the bench extra)",
    )
    parser.add_argument("--json", type=Path, help="also write every raw figure to this file")
    arguments = parser.parse_args(argv)
    if arguments.chart and (why := chart.why_unavailable()):
        parser.error(why)
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    sizes = QUICK if arguments.quick else FULL
    started = time.perf_counter()
    load_before = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="unmocked-bench-") as scratch_name,
        scratch_cache() as cache,
    ):
        scratch = Path(scratch_name)
        migrations = scratch / "migrations"
        write_migrations(migrations)
        startup = measure_startup(scratch, sizes.startup_repeat)
        parallel = measure_parallel(
            scratch, migrations, cache, sizes.xdist_tests, sizes.xdist_repeat
        )
        memory = measure_memory(scratch, migrations, cache, sizes.memory_tests)
        with server_url(None, cache) as (admin_url, description):
            progress(f"per test: server {description}")
            per_test = per_test_costs(
                admin_url,
                scratch / "per-test",
                list(MODES),
                (sizes.per_test_small, sizes.per_test_large),
                sizes.per_test_repeat,
            )
    load_after = load_average()
    seconds = time.perf_counter() - started
    print(
        f"{description}, {TABLE_COUNT}-table schema, {os.cpu_count()} CPUs, load average "
        f"{load_before:.1f} before and {load_after:.1f} after; "
        f"{'--quick' if arguments.quick else 'full run'} took {seconds:.0f} s.\n"
    )
    print(
        f"Per-test costs: (test loop at {sizes.per_test_large} - at {sizes.per_test_small}) / "
        f"{sizes.per_test_large - sizes.per_test_small}, median of {sizes.per_test_repeat}; "
        "floor = the same work with no isolation.\n"
    )
    print(table(per_test, list(MODES), (sizes.per_test_small, sizes.per_test_large)))
    print(
        f"\nTargets: start-up median of {sizes.startup_repeat}, xdist median of "
        f"{sizes.xdist_repeat}; ratio = peer / unmocked.\n"
    )
    rows = [
        *per_test_rows(per_test),
        *startup_rows(startup),
        *parallel_rows(parallel),
        *memory_rows(memory),
    ]
    print(render(rows))
    if arguments.chart:
        chart.draw(per_test, list(MODES), arguments.chart, f"{description}, {TABLE_COUNT} tables")
        progress(f"chart: {arguments.chart}")
    if arguments.json:
        figures = {
            "seconds": seconds,
            "sizes": asdict(sizes),
            "per_test": [asdict(result) for result in per_test],
            "startup": asdict(startup),
            "parallel": asdict(parallel),
            "memory": asdict(memory),
            "rows": [asdict(row) for row in rows],
        }
        write_report(arguments.json, description, (load_before, load_after), figures)
    return 0


if __name__ == "__main__":
    run_command(main)
