"""``unmocked run -- COMMAND``: the command's exit status is ours, signals reach it, and nothing
outlives the run: no postgres, no command, no database (see test_env_export.py for whole suites)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from helpers import (
    RUNNING_SERVER_URL,
    UNMOCKED_COMMAND,
    embedded_env,
    is_running,
    needs_embedded,
    run_unmocked,
    server_answers,
)

# Writes what the command was given, then waits to be stopped (a SIGTERM ends it with status 7).
WAITER = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(f"{os.getpid()} {os.environ['PGPORT']} {os.environ['PGDATABASE']}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(120)
"""

LIST_DATABASES = (
    "import psycopg; conn = psycopg.connect(''); "
    "print(' '.join(r[0] for r in conn.execute('SELECT datname FROM pg_database')))"
)


def databases_seen_by_a_new_run(
    folder: Path, unmocked_cache: Path
) -> subprocess.CompletedProcess[str]:
    """A new ``unmocked run`` on the same cached cluster, printing the databases it finds."""
    return run_unmocked(
        "run",
        "--",
        sys.executable,
        "-c",
        LIST_DATABASES,
        cwd=folder,
        env=embedded_env(unmocked_cache),
    )


def start_waiter(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    """``unmocked run`` of the waiter; returns it and the waiter's pid, port and database."""
    (tmp_path / "waiter.py").write_text(WAITER)
    given = tmp_path / "given"
    run = subprocess.Popen(
        [*UNMOCKED_COMMAND, "run", "--", sys.executable, "waiter.py", "given"],
        cwd=tmp_path,
        env=env,
        text=True,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not given.exists():
        assert run.poll() is None and time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    return run, given.read_text().split()


def answers(port: str) -> bool:
    try:
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def eventually(condition: object, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@needs_embedded
@pytest.mark.parametrize(
    ("command", "status"),
    [
        ([sys.executable, "-c", "raise SystemExit(3)"], 3),
        ([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"], 143),
        (["no-such-command-here"], 127),
    ],
    ids=["exit-3", "killed-by-sigterm", "not-found"],
)
def test_the_commands_exit_status_is_passed_through(
    tmp_path: Path, unmocked_cache: Path, command: list[str], status: int
) -> None:
    result = run_unmocked("run", "--", *command, cwd=tmp_path, env=embedded_env(unmocked_cache))

    assert result.returncode == status, result.stderr


@needs_embedded
def test_sigterm_reaches_the_command_and_the_run_cleans_up(
    tmp_path: Path, unmocked_cache: Path
) -> None:
    run, (_pid, port, database) = start_waiter(tmp_path, embedded_env(unmocked_cache))

    run.send_signal(signal.SIGTERM)

    assert run.wait(60) == 7  # the command's own answer to SIGTERM
    assert not answers(port)
    after = databases_seen_by_a_new_run(tmp_path, unmocked_cache)
    assert database not in after.stdout.split()


@needs_embedded
def test_sigkill_of_unmocked_takes_the_command_and_the_server_with_it(
    tmp_path: Path, unmocked_cache: Path
) -> None:
    run, (pid, port, database) = start_waiter(tmp_path, embedded_env(unmocked_cache))

    run.kill()
    run.wait(10)

    assert eventually(lambda: not is_running(int(pid))), "the command outlived unmocked"
    assert eventually(lambda: not answers(port)), "the server outlived unmocked"
    # The next run on that cluster collects the database the killed run left.
    after = databases_seen_by_a_new_run(tmp_path, unmocked_cache)
    assert after.returncode == 0, after.stderr
    assert database not in after.stdout.split()


def test_on_a_server_given_by_url_only_what_unmocked_created_is_dropped(tmp_path: Path) -> None:
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    mine = f"suite_own_{os.getpid()}"
    env = {**embedded_env(tmp_path / "cache"), "UNMOCKED_PROVIDER": "url"}
    env["UNMOCKED_DATABASE_URL"] = RUNNING_SERVER_URL
    create = (
        f"import psycopg; psycopg.connect('', autocommit=True).execute('CREATE DATABASE {mine}')"
    )
    try:
        result = run_unmocked("run", "--", sys.executable, "-c", create, cwd=tmp_path, env=env)

        assert result.returncode == 0, result.stderr
        assert (
            f"left on the server (unmocked drops only its own databases there): database(s) {mine}"
            in result.stderr
        )
        with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as admin:
            names = {row[0] for row in admin.execute("SELECT datname FROM pg_database")}
        assert mine in names
        exported = re.search(r"database (unmocked_\S+) in", result.stderr)
        assert exported is not None and exported.group(1) not in names
    finally:
        with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {mine}")


def test_a_run_without_a_command_says_what_to_write(tmp_path: Path) -> None:
    result = run_unmocked("run", cwd=tmp_path, env=embedded_env(tmp_path))

    assert result.returncode == 1
    assert "unmocked run -- pytest" in result.stderr


@needs_embedded
def test_a_per_worker_setting_it_does_not_read_is_said_not_ignored(
    tmp_path: Path, unmocked_cache: Path
) -> None:
    env = {**embedded_env(unmocked_cache), "UNMOCKED_ENV_DATABASE": "per-worker"}
    result = run_unmocked("run", "--", "true", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stderr
    assert "unmocked_env_database = per-worker is for the pytest option" in result.stderr


def test_on_a_server_whose_url_has_no_password_nothing_is_exported_empty(tmp_path: Path) -> None:
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    env = {**embedded_env(tmp_path / "cache"), "UNMOCKED_PROVIDER": "url"}
    env["UNMOCKED_DATABASE_URL"] = RUNNING_SERVER_URL  # a server that trusts: no password
    show = (
        "import os; print({k: v for k, v in os.environ.items() "
        "if k.startswith(('PG', 'DB_', 'POSTGRES'))})"
    )

    result = run_unmocked(
        "run",
        "--env",
        "POSTGRES_PASSWORD={password}",
        "--env",
        "DB_USER={user}",
        "--",
        sys.executable,
        "-c",
        show,
        cwd=tmp_path,
        env=env,
    )

    assert result.returncode == 0, result.stderr
    given = eval(result.stdout)
    assert given["DB_USER"] == given["PGUSER"] == "postgres"
    assert all(given.values()), given
    # Not empty: left out, so the suite's own default (or libpq's .pgpass) applies.
    assert "POSTGRES_PASSWORD" not in given and "PGPASSWORD" not in given
    assert "not exported, empty on this server" in result.stderr
    assert "POSTGRES_PASSWORD={password}" in result.stderr
