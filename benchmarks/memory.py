"""How much memory unmocked's server and its backends hold during a two-worker run.

The run is ``pytest -n 2`` over ``pg`` and ``pg_url`` tests together, on the default server that
the run starts itself from a warm cache. While it runs, every ~50 ms the sampler finds every
``postgres`` process below the pytest process (the server, its auxiliary processes and every
backend, the workers' and the clones' included) and sums their memory from
``/proc/<pid>/smaps_rollup``. Two sums are kept, and the peak of each:

- PSS, where each shared page is split among the processes that map it: shared_buffers is counted
  once over all backends, so the sum is what the server really costs the machine;
- RSS, where every process counts every shared page it has touched in full: shared_buffers is
  counted once per backend, so the sum overstates, but it is what ``ps`` and most targets quote.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_runs import clean_environment, lay_out, progress, timed_run

_INTERVAL_SECONDS = 0.05


@dataclass(frozen=True)
class MemoryResult:
    """Peaks over one run, in MB (10^6 bytes, as the target is written), and what was sampled."""

    peak_pss_mb: float
    peak_rss_mb: float
    peak_processes: int
    samples: int
    tests: int


@dataclass
class _Sampler:
    """Peaks seen so far; ``watch`` fills them in while the pytest process runs."""

    peak_pss_kib: int = 0
    peak_rss_kib: int = 0
    peak_processes: int = 0
    samples: int = 0

    def watch(self, process: subprocess.Popen[str]) -> None:
        # pytest's output is read only after it ends; a pipe's buffer holds the -q dots meanwhile.
        while process.poll() is None:
            server = postgres_processes(process.pid)
            if server:
                pss, rss = zip(*(memory_kib(pid) for pid in server), strict=True)
                self.peak_pss_kib = max(self.peak_pss_kib, sum(pss))
                self.peak_rss_kib = max(self.peak_rss_kib, sum(rss))
                self.peak_processes = max(self.peak_processes, len(server))
                self.samples += 1
            time.sleep(_INTERVAL_SECONDS)


def measure_memory(workspace: Path, migrations: Path, cache: Path, tests: int) -> MemoryResult:
    """Peak memory of the server during ``-n 2`` over ``tests`` ``pg`` and ``tests`` ``pg_url``."""
    folder = lay_out(
        workspace / "memory",
        {"test_pg.py": "suite_unmocked_pg.py", "test_pg_url.py": "suite_unmocked_pg_url.py"},
        [f"unmocked_migrations = {migrations}"],
    )
    sampler = _Sampler()
    env = {**clean_environment(), "UNMOCKED_CACHE_DIR": str(cache)}
    run = timed_run(
        folder,
        tests,
        env,
        ["xdist.plugin", "unmocked.plugin"],
        arguments=["-n", "2"],
        expected=2 * tests,
        during=sampler.watch,
    )
    progress(
        f"memory: {2 * tests} tests on 2 workers in {run.wall_seconds:.2f} s, "
        f"{sampler.samples} samples, peak PSS {_mb(sampler.peak_pss_kib):.0f} MB, "
        f"RSS {_mb(sampler.peak_rss_kib):.0f} MB"
    )
    return MemoryResult(
        peak_pss_mb=_mb(sampler.peak_pss_kib),
        peak_rss_mb=_mb(sampler.peak_rss_kib),
        peak_processes=sampler.peak_processes,
        samples=sampler.samples,
        tests=2 * tests,
    )


def postgres_processes(root: int) -> list[int]:
    """The pids of every ``postgres`` process descending from ``root``."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except OSError:  # the process ended between listing and reading
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and ")", so split at the last ")".
        head, _, tail = text.rpartition(")")
        pid_text, _, name = head.partition(" (")
        children.setdefault(int(tail.split()[1]), []).append(int(pid_text))
        names[int(pid_text)] = name
    found, pending = [], list(children.get(root, []))
    while pending:
        pid = pending.pop()
        if names.get(pid) == "postgres":
            found.append(pid)
        pending += children.get(pid, [])
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """``(Pss, Rss)`` of a process in KiB, or zeros if it has ended."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    fields = {line.split(":")[0]: int(line.split()[1]) for line in lines[1:] if ":" in line}
    return fields.get("Pss", 0), fields.get("Rss", 0)


def _mb(kib: int) -> float:
    return kib * 1024 / 1e6
