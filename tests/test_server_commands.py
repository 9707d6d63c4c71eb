"""``unmocked up`` / ``status`` / ``down``: a real server that outlives the command, that later runs
attach to and never stop, and whose record cannot send a run to a server that is gone."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from helpers import (
    PYTEST_COMMAND,
    is_running,
    needs_embedded,
    run_pytest,
    run_unmocked,
    wait_until_gone,
)
from unmocked import ownership
from unmocked.servers._as_root import service_account
from unmocked.servers._slots import data_root

pytestmark = needs_embedded

SUITE = """
def test_uses_the_database(pg, pg_url):
    pg.execute("SELECT 1")
"""

KILLED_SUITE = """
import os, time

def test_waits_to_be_killed(pg, pg_url):
    with open(os.environ["STARTED_FILE"], "w") as out:
        out.write("started")
    time.sleep(120)
"""


@dataclass
class Cache:
    """A cache folder of its own, and the environment that points the command and runs at it."""

    path: Path

    @property
    def env(self) -> dict[str, str]:
        kept = {key: value for key, value in os.environ.items() if not key.startswith("UNMOCKED_")}
        return dict(kept, UNMOCKED_CACHE_DIR=str(self.path))

    def unmocked(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run the ``unmocked`` command on this cache; its exit status and output (stderr too)."""
        done = run_unmocked(*args, env=env or self.env, timeout=120)
        return done.returncode, done.stdout + done.stderr

    def up(self) -> int:
        """Start the server; its pid."""
        status, output = self.unmocked("up")
        assert status == 0, output
        found = re.search(r"pid: (\d+)", output)
        assert found, output
        return int(found.group(1))

    def record(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.path / "server.json").read_text())
        return loaded

    def url(self) -> str:
        server = self.record()["server"]
        assert isinstance(server, dict)
        return str(server["url"])

    def pytest(self, project: Path, *args: str, env: dict[str, str] | None = None) -> str:
        done = run_pytest(
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            *args,
            cwd=project,
            env=env or self.env,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def remove(self) -> None:
        """Stop what ``up`` left running, even when the test failed, and free the RAM it used."""
        self.unmocked("down")
        shutil.rmtree(data_root(self.path, service_account()), ignore_errors=True)


def _cache(path: Path) -> Iterator[Cache]:
    cache = Cache(path)
    try:
        yield cache
    finally:
        cache.remove()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    yield from _cache(tmp_path / "cache")


@pytest.fixture(scope="module")
def up_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    """A cache folder whose server ``unmocked up`` started, for tests that only attach to it."""
    caches = _cache(tmp_path_factory.mktemp("up-cache"))
    cache = next(caches)
    try:
        cache.up()
        yield cache
    finally:
        caches.close()  # runs _cache's clean-up: `unmocked down`, then the RAM it used


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: one migration and a test using both kinds of database."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "001.sql").write_text("CREATE TABLE notes (body text);\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nunmocked_migrations = migrations\n")
    (tmp_path / "test_suite.py").write_text(SUITE)
    return tmp_path


def unmocked_databases(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [(name, owner.kind) for name, owner in ownership.our_databases(conn)]


def test_status_without_a_server_says_so_and_exits_1(cache: Cache) -> None:
    status, output = cache.unmocked("status")
    assert status == 1
    assert "no server started by `unmocked up` runs" in output


def test_up_refuses_when_runs_would_use_the_database_url_instead(cache: Cache) -> None:
    env = dict(
        cache.env, UNMOCKED_DATABASE_URL="postgresql://tester:s3cret@127.0.0.1:5432/postgres"
    )
    status, output = cache.unmocked("up", env=env)
    assert status == 1
    assert "UNMOCKED_DATABASE_URL is set" in output and "s3cret" not in output
    assert not (cache.path / "server.json").exists()


def test_up_starts_a_server_that_outlives_the_command_and_down_stops_it(cache: Cache) -> None:
    pid = cache.up()
    assert is_running(pid), "the server did not outlive `unmocked up`"
    with psycopg.connect(cache.url()) as conn:
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
    status, output = cache.unmocked("status")
    assert status == 0, output
    for line in ("provider:   embedded", "version:    PostgreSQL 18.", f"pid:        {pid}"):
        assert line in output
    assert re.search(r"uptime: +0 min \d+ s", output)
    assert "url:        postgresql://postgres:***@127.0.0.1:" in output  # never the secret

    status, output = cache.unmocked("up")
    assert status == 0 and "already running" in output and f"pid: {pid}" in output

    status, output = cache.unmocked("down")
    assert status == 0 and "stopped PostgreSQL 18." in output
    assert not is_running(pid)
    assert not (cache.path / "server.json").exists()
    assert cache.unmocked("status")[0] == 1


def test_a_pytest_run_attaches_to_the_up_server_and_leaves_it_running(
    up_cache: Cache, project: Path
) -> None:
    pid = int(str(up_cache.record()["pid"]))
    output = up_cache.pytest(project)
    assert "(embedded, unmocked up, " in output
    assert is_running(pid), "the run stopped the server `unmocked up` started"
    kinds = {kind for _, kind in unmocked_databases(up_cache.url())}
    assert kinds == {"template"}, "the run left databases behind, or its template is gone"
    assert "template" in up_cache.unmocked("status")[1]
    second = up_cache.pytest(project)
    assert re.search(r"template \w+ reused", second)


def test_xdist_workers_attach_to_the_up_server_too(up_cache: Cache, project: Path) -> None:
    output = up_cache.pytest(project, "-n", "2")
    assert "(embedded, unmocked up, " in output
    assert {kind for _, kind in unmocked_databases(up_cache.url())} == {"template"}


def test_a_run_killed_while_attached_leaves_the_server_and_only_collectable_databases(
    up_cache: Cache, project: Path, tmp_path: Path
) -> None:
    (project / "test_suite.py").write_text(KILLED_SUITE)
    started = tmp_path / "started"
    run = subprocess.Popen(
        [*PYTEST_COMMAND, "-q", "-p", "no:randomly"],
        cwd=project,
        env=dict(up_cache.env, STARTED_FILE=str(started)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not started.exists():
        assert run.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    pid = int(str(up_cache.record()["pid"]))
    assert is_running(pid), "killing an attached run stopped the server"
    left = {kind for _, kind in unmocked_databases(up_cache.url())} - {"template"}
    assert left == {"rollback", "fresh"}
    status, output = up_cache.unmocked("gc")
    assert status == 0, output
    assert {kind for _, kind in unmocked_databases(up_cache.url())} == {"template"}


def test_runs_whose_settings_the_up_server_does_not_fit_start_their_own(
    up_cache: Cache, project: Path
) -> None:
    env = dict(up_cache.env, UNMOCKED_SERVER_SETTINGS="max_prepared_transactions=10")
    output = up_cache.pytest(project, env=env)
    assert "unmocked: PostgreSQL 18." in output and "unmocked up" not in output
    status, output = up_cache.unmocked("status", env=env)
    assert status == 0 and "runs attach: no" in output


def test_a_record_of_a_server_that_died_is_removed_and_runs_start_their_own(
    cache: Cache, project: Path
) -> None:
    pid = cache.up()
    os.kill(pid, signal.SIGKILL)  # a crash; a reboot emptying /dev/shm looks the same
    wait_until_gone(pid)
    output = cache.pytest(project)
    assert "unmocked up" not in output
    assert not (cache.path / "server.json").exists()
    assert cache.unmocked("status")[0] == 1


def test_a_record_whose_pid_now_belongs_to_another_process_is_not_trusted(cache: Cache) -> None:
    pid = cache.up()
    genuine = (cache.path / "server.json").read_text()
    reused = dict(json.loads(genuine), pid=os.getpid())  # alive, but not a postgres
    (cache.path / "server.json").write_text(json.dumps(reused))
    try:
        status, output = cache.unmocked("status")
        assert status == 1, output
        assert not (cache.path / "server.json").exists()
    finally:
        (cache.path / "server.json").write_text(genuine)  # so that `down` stops the real server
    assert is_running(pid)
