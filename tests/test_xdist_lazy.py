"""Under pytest-xdist a server starts only when a collected test asks for a database, as without
xdist: then once, in the controller, shared by every worker; and a server that cannot start fails
only the tests that need it, each with one paragraph."""

from __future__ import annotations

from pathlib import Path

from helpers import embedded_env, needs_embedded, run_pytest, write_files

# Nothing answers on port 1: a run that tries to use this server fails at once.
DEAD_URL = "postgresql://postgres@127.0.0.1:1/postgres"

NO_DATABASE_SUITE = {
    "pytest.ini": "[pytest]\naddopts = -p no:randomly -p no:django\n",
    "test_plain.py": """
        def test_one():
            assert 1

        def test_two():
            assert 2
    """,
}

MIXED_SUITE = {
    **NO_DATABASE_SUITE,
    "test_database.py": """
        def test_rollback(pg):
            assert pg.execute("SELECT 1").fetchone()[0] == 1

        def test_fresh(pg_url):
            assert pg_url
    """,
}

# Each test says which worker ran it and which postmaster served it.
SERVER_PER_TEST = """
import os
import pytest

@pytest.mark.parametrize("n", range(8))
def test_which_server(pg, n):
    pid, started = pg.execute(
        "SELECT pg_backend_pid(), pg_postmaster_start_time()::text"
    ).fetchone()
    port = pg.execute("SELECT current_setting('port')").fetchone()[0]
    with open(os.environ["SERVER_LOG"], "a") as log:
        log.write(f"{os.environ['PYTEST_XDIST_WORKER']}|{port}|{started}\\n")
"""


def test_a_suite_without_database_tests_starts_no_server_under_xdist(tmp_path: Path) -> None:
    project = write_files(tmp_path / "project", NO_DATABASE_SUITE)
    cache = tmp_path / "cache"

    result = run_pytest("-q", "-n", "2", cwd=project, env=embedded_env(cache))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert "unmocked" not in result.stdout + result.stderr
    assert not cache.exists(), "a server was started: its cache folder was made"


def test_a_suite_without_database_tests_runs_where_no_server_can_start(tmp_path: Path) -> None:
    project = write_files(tmp_path, NO_DATABASE_SUITE)
    env = embedded_env(tmp_path / "cache", UNMOCKED_PROVIDER="url", UNMOCKED_DATABASE_URL=DEAD_URL)

    result = run_pytest("-q", "-n", "2", cwd=project, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_a_server_that_cannot_start_fails_only_the_tests_that_need_it(tmp_path: Path) -> None:
    project = write_files(tmp_path, MIXED_SUITE)
    env = embedded_env(tmp_path / "cache", UNMOCKED_PROVIDER="url", UNMOCKED_DATABASE_URL=DEAD_URL)

    result = run_pytest("-q", "-n", "2", cwd=project, env=env)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "2 passed, 2 errors" in result.stdout
    for word in ("UsageError", "INTERNALERROR", "Traceback", "unmocked/"):
        assert word not in output
    # One paragraph per test that needed the server: what happened, and what to do.
    assert result.stdout.count("UNMOCKED_DATABASE_URL (postgresql://postgres@127.0.0.1:1/") >= 2
    assert "Check that the server runs" in result.stdout


@needs_embedded
def test_database_tests_in_every_worker_share_one_server_the_controller_started(
    tmp_path: Path, unmocked_cache: Path
) -> None:
    project = write_files(tmp_path, {"test_server.py": SERVER_PER_TEST, **NO_DATABASE_SUITE})
    log = tmp_path / "servers.log"
    env = embedded_env(unmocked_cache, SERVER_LOG=str(log))

    result = run_pytest("-q", "-n", "2", cwd=project, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 passed" in result.stdout
    seen = [line.split("|") for line in log.read_text().splitlines()]
    assert {worker for worker, _, _ in seen} == {"gw0", "gw1"}
    assert len({(port, started) for _, port, started in seen}) == 1, seen
    # The controller says which server it started, once, before the tests.
    assert result.stdout.count("unmocked: PostgreSQL") == 2  # the header and the summary
    assert result.stdout.index("ready in") < result.stdout.index("10 passed")
