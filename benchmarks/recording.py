"""What recording every test's statements costs the process that runs the tests, in instructions.

Run it from the project root::

    .venv/bin/python benchmarks/recording.py [--tests 100] [--url URL] [--json PATH]

``isolation.py``'s wall-clock rows move from run to run by more than recording can cost (the load
of a shared machine, the mode that ran just before). Recording is work in the test process alone:
no statement more goes to the server. So it is counted here in a way the rest of the machine cannot
disturb: valgrind's callgrind counts the instructions the pytest process executes, for the suites
of ``isolation.py``'s ``pg`` and ``sa_session`` rows, with the suite's checks on (the default,
every test recorded), off (``-unchecked``: nothing recorded) and with the ``queries`` fixture too
(``+queries``). Each mode runs twice, with 10 tests and with 10 + ``--tests``: the difference
divided by ``--tests`` is one test's instructions, without start-up. The counts repeat to a
fraction of a percent, whatever else the machine does.

What recording adds to the process's instructions is an upper bound of what it adds to a test's
wall time: the wall time also holds the server's work and the waits for it, which recording does
not change (issue 12's budget: at most 5% on the ``pg`` and ``sa_session`` rows).
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from cli import load_average, run_command, write_report
from isolation import MODES, Mode, environment, lay_out_mode, prepared_target, server_url
from pytest_runs import BenchmarkError, progress, timed_run

# Each checked mode, with its unchecked twin: what it costs is the difference.
PAIRS = {
    "pg": "pg-unchecked",
    "pg+queries": "pg-unchecked",
    "sa_session": "sa_session-unchecked",
    "sa_session+queries": "sa_session-unchecked",
}
_SMALL = 10


@dataclass(frozen=True)
class Counted:
    """One mode's instructions for one test, and what it adds over its unchecked twin."""

    mode: str
    per_test: float
    added: float | None = None
    share: float | None = None
    """``added`` as a share of the twin's instructions for one test."""


def instructions(mode: Mode, folder: Path, tests: int, env: dict[str, str]) -> int:
    """The instructions a pytest run of ``tests`` tests of ``mode`` executes, as callgrind counts
    them (the test process only: the server is another process)."""
    counts = folder / "callgrind.out"
    counts.unlink(missing_ok=True)
    wrapper = ["valgrind", "--tool=callgrind", "--dump-line=no", f"--callgrind-out-file={counts}"]
    try:
        timed_run(folder, tests, env, mode.plugins, wrapper=wrapper)
    except BenchmarkError as error:
        raise BenchmarkError(f"{mode.name} under valgrind: {error}") from None
    total = re.search(r"^(?:summary|totals): (\d+)", counts.read_text(), re.MULTILINE)
    if total is None:
        raise BenchmarkError(f"{counts} holds no instruction total: did valgrind run?")
    return int(total.group(1))


def count(modes: list[Mode], workspace: Path, url: str, tests: int) -> list[Counted]:
    """Each mode's instructions per test, and the checked modes' against their twins."""
    per_test = {}
    with prepared_target(url, workspace) as target:
        env = {**environment(target), "PYTHONHASHSEED": "0"}  # the same dicts, run after run
        for mode in modes:
            folder = lay_out_mode(mode, target, workspace)
            timed_run(folder, 1, env, mode.plugins)  # the template
            small = instructions(mode, folder, _SMALL, env)
            large = instructions(mode, folder, _SMALL + tests, env)
            per_test[mode.name] = (large - small) / tests
            progress(f"recording: {mode.name:<22} {per_test[mode.name]:>12,.0f} instructions")
    counted = []
    for mode in modes:
        twin = PAIRS.get(mode.name)
        if twin in per_test:
            added = per_test[mode.name] - per_test[twin]
            counted.append(Counted(mode.name, per_test[mode.name], added, added / per_test[twin]))
        else:
            counted.append(Counted(mode.name, per_test[mode.name]))
    return counted


def table(counted: list[Counted]) -> str:
    """The counts as benchmarks/README.md keeps them."""
    lines = [
        "| mode | instructions a test | added over the unchecked twin | share |",
        "|---|---|---|---|",
    ]
    for row in counted:
        added = "-" if row.added is None else f"{row.added:+,.0f}"
        share = "-" if row.share is None else f"{row.share:+.1%} vs {PAIRS[row.mode]}"
        lines.append(f"| {row.mode} | {row.per_test:,.0f} | {added} | {share} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=100, help="tests added to the larger run")
    parser.add_argument("--url", help="a server to use instead of an embedded one")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise BenchmarkError("valgrind is not on PATH: apt-get install valgrind")
    names = [*dict.fromkeys([*PAIRS, *PAIRS.values()])]
    modes = [mode for mode in MODES if mode.name in names]
    load_before = load_average()
    with server_url(args.url) as (url, described), tempfile.TemporaryDirectory() as workspace:
        counted = count(modes, Path(workspace), url, args.tests)
    loads = (load_before, load_average())
    print(f"{described}; load average {loads[0]:.2f} before, {loads[1]:.2f} after")
    print(table(counted))
    if args.json:
        write_report(args.json, described, loads, {"modes": [asdict(row) for row in counted]})
    return 0


if __name__ == "__main__":
    run_command(main)
