"""Settings a test gives the whole server cannot break later runs, and its run names the test.

A ``pg_url`` test may run ``ALTER SYSTEM``, ``ALTER ROLE ... SET`` or ``ALTER DATABASE ... SET``
(tests of connection handling do). A server unmocked started is put back to its known settings
every time it starts; on a server given by URL nothing is altered, but unmocked's own sessions
ignore what would break them. Either way the test that made the change is named in a warning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    EACH_KIND_OF_SERVER,
    RUNNING_SERVER_URL,
    a_role_of_its_own,
    run_unmocked,
    server_answers,
)

PROVIDERS = EACH_KIND_OF_SERVER

BREAKS_THE_SERVER = """
import psycopg

def test_01_makes_every_new_session_read_only(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER ROLE CURRENT_USER SET lock_timeout = '1ms'")
        conn.execute("ALTER DATABASE postgres SET idle_session_timeout = '20ms'")
        conn.execute("ALTER DATABASE template1 SET statement_timeout = '1ms'")
        conn.execute("ALTER DATABASE postgres WITH ALLOW_CONNECTIONS false")
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        conn.execute("SELECT pg_reload_conf()")  # this session too is read-only from now on
"""

WRITES = """
import psycopg

def test_pg_url_writes(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")

def test_pg_writes(pg):
    pg.execute("INSERT INTO users (email) VALUES ('a@example.com')")
    pg.commit()
"""


@pytest.fixture
def own_cluster(
    user_project: pytest.Pytester,
    provider: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The user's project on a cluster of its own: these tests break it on purpose."""
    if provider["UNMOCKED_PROVIDER"] == "url":
        pytest.skip("a server given by URL is not unmocked's to put back (see the URL test below)")
    cache = str(tmp_path_factory.mktemp("cache-to-break"))
    monkeypatch.setenv("UNMOCKED_CACHE_DIR", cache)
    return {**os.environ, **provider, "UNMOCKED_CACHE_DIR": cache}


def test_settings_a_test_gives_the_whole_server_do_not_reach_the_next_run(
    user_project: pytest.Pytester, own_cluster: dict[str, str]
) -> None:
    user_project.makepyfile(test_breaks=BREAKS_THE_SERVER)
    first = user_project.runpytest("-p", "no:randomly")
    first.assert_outcomes(passed=1, warnings=1)
    output = first.stdout.str()
    assert "INTERNALERROR" not in output
    first.stdout.fnmatch_lines(["*test_01_makes_every_new_session_read_only changed settings*"])
    for statement in (
        "ALTER SYSTEM SET default_transaction_read_only = 'on'",
        "ALTER ROLE postgres SET lock_timeout=1ms",
        "ALTER DATABASE postgres SET idle_session_timeout=20ms",
        "ALTER DATABASE template1 SET statement_timeout=1ms",
        "ALTER DATABASE postgres WITH ALLOW_CONNECTIONS false",
    ):
        assert statement in output, output

    doctor = run_unmocked("doctor", env=own_cluster)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "put back" in doctor.stdout and "default_transaction_read_only" in doctor.stdout, (
        doctor.stdout
    )

    for path in list(user_project.path.glob("test_*.py")):
        path.unlink()
    user_project.makepyfile(test_writes=WRITES)
    second = user_project.runpytest("-p", "no:randomly", "-W", "error::unmocked.UnmockedWarning")
    second.assert_outcomes(passed=2)

    collected = run_unmocked("gc", env=own_cluster)
    assert collected.returncode == 0, collected.stdout + collected.stderr


def test_a_cluster_whose_role_can_no_longer_log_in_is_one_clear_error(
    user_project: pytest.Pytester, own_cluster: dict[str, str]
) -> None:
    user_project.makepyfile(
        """
        import psycopg

        def test_locks_the_admin_out(pg_url):
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("ALTER ROLE CURRENT_USER NOLOGIN")
        """
    )
    first = user_project.runpytest("-p", "no:randomly")
    first.assert_outcomes(passed=1, warnings=1)
    first.stdout.fnmatch_lines(["*ALTER ROLE postgres NOLOGIN*"])

    for path in list(user_project.path.glob("test_*.py")):
        path.unlink()
    user_project.makepyfile(test_writes=WRITES)
    second = user_project.runpytest("-p", "no:randomly")
    output = second.stdout.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    second.assert_outcomes(errors=2)
    match = re.search(r"delete (\S+) and run again", output)
    assert match and "cannot log in" in output, output
    assert Path(match[1]).is_dir()


@pytest.fixture
def url_of_a_role_of_its_own() -> Iterator[str]:
    """The running server's URL for a superuser role of this test's own, dropped afterwards.

    Settings a test gives that role reach nobody else on the shared server.
    """
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    role = f"unmocked_settings_{os.getpid()}"
    with a_role_of_its_own(RUNNING_SERVER_URL, role, "SUPERUSER") as url:
        yield url


def test_own_sessions_ignore_the_timeouts_a_test_gave_its_role_on_a_server_given_by_url(
    pytester: pytest.Pytester,
    url_of_a_role_of_its_own: str,
    unmocked_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNMOCKED_PROVIDER", "url")
    monkeypatch.setenv("UNMOCKED_DATABASE_URL", url_of_a_role_of_its_own)
    monkeypatch.setenv("UNMOCKED_CACHE_DIR", str(unmocked_cache))
    env = {**os.environ}
    pytester.mkdir("migrations").joinpath("001.sql").write_text(
        "CREATE TABLE users (id serial PRIMARY KEY, email text);\n"
    )
    pytester.makeini(
        "[pytest]\nunmocked_migrations = migrations\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    user_project = pytester
    user_project.makepyfile(
        test_breaks="""
        import psycopg

        def test_times_out_its_role(pg_url):
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("ALTER ROLE CURRENT_USER SET idle_session_timeout = '20ms'")
                conn.execute("ALTER ROLE CURRENT_USER SET lock_timeout = '1ms'")
        """
    )
    first = user_project.runpytest("-p", "no:randomly")
    first.assert_outcomes(passed=1, warnings=1)
    first.stdout.fnmatch_lines(
        ["*test_times_out_its_role changed settings*not undo them on a server given by URL*"]
    )
    assert "SET idle_session_timeout=20ms" in first.stdout.str()

    for path in list(user_project.path.glob("test_*.py")):
        path.unlink()
    user_project.makepyfile(
        test_later="""
        import time

        import psycopg
        import pytest

        @pytest.mark.parametrize("turn", range(3))
        def test_pg_url_waits_and_writes(pg_url, turn):
            time.sleep(0.05)  # unmocked's sessions wait longer than idle_session_timeout
            with psycopg.connect(pg_url) as conn:
                conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")
        """
    )
    second = user_project.runpytest("-p", "no:randomly")
    second.assert_outcomes(passed=3)

    collected = run_unmocked("gc", env=env)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    doctor = run_unmocked("doctor", env=env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "new sessions inherit ALTER ROLE" in doctor.stdout, doctor.stdout
    assert "SET idle_session_timeout=20ms" in doctor.stdout, doctor.stdout


def test_a_run_that_attaches_to_the_up_server_puts_its_settings_back_first(
    user_project: pytest.Pytester, own_cluster: dict[str, str]
) -> None:
    up = run_unmocked("up", env=own_cluster)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        user_project.makepyfile(test_breaks=BREAKS_THE_SERVER)
        first = user_project.runpytest_subprocess("-p", "no:randomly")
        first.assert_outcomes(passed=1, warnings=1)
        assert "unmocked up" in first.stdout.str()
        for path in list(user_project.path.glob("test_*.py")):
            path.unlink()
        user_project.makepyfile(test_writes=WRITES)
        second = user_project.runpytest_subprocess("-p", "no:randomly")
        second.assert_outcomes(passed=2)
    finally:
        down = run_unmocked("down", env=own_cluster)
        assert down.returncode == 0, down.stdout + down.stderr
