"""``unmocked_leaks``: the connections a ``pg_url`` test leaves open to its database are named.

A user's suite, run by pytester on the embedded server and on a server given by URL, leaves a
connection open, one idle in a transaction and an SQLAlchemy engine it never disposes; beside
them, a connection closed in the test, one dropped by the test's return, an engine disposed by a
fixture and the ``queries`` fixture's own connection must stay silent. Each leak is named
(application_name, state, age, the last statement without its values), warned by default, an
error of the test's teardown with ``fail`` or under ``-W error``, and nothing with ``off``; every
time the next test starts with no session left.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers import EACH_KIND_OF_SERVER, query, run_unmocked
from unmocked.errors import ConfigurationError
from unmocked.settings import Settings

PROVIDERS = EACH_KIND_OF_SERVER

SUITE = """
import psycopg
import pytest
from sqlalchemy import create_engine, text

# What an app keeps for its lifetime: module globals the tests never clean up.
LEFT_OPEN = []
APP = {}

def sqlalchemy_url(url):
    return url.replace("postgresql://", "postgresql+psycopg://", 1)

def test_leaves_a_connection_open(pg_url):
    conn = psycopg.connect(pg_url, application_name="myapp", autocommit=True)
    conn.execute("SELECT 1")
    LEFT_OPEN.append(conn)

def test_leaves_one_idle_in_a_transaction(pg_url):
    conn = psycopg.connect(pg_url, application_name="txapp")
    conn.execute("SELECT count(*) FROM users WHERE email = 'secret@example.com'")
    LEFT_OPEN.append(conn)

def test_never_disposes_its_engine(pg_url):
    APP["engine"] = create_engine(sqlalchemy_url(pg_url))
    with APP["engine"].connect() as conn:
        conn.execute(text("SELECT 42"))

def test_the_next_test_starts_with_no_session_left(pg_url):
    for conn in LEFT_OPEN:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with psycopg.connect(pg_url) as conn:
        others = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert others == 0

def test_closes_its_connection(pg_url):
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")

def test_drops_its_connection_on_return(pg_url):
    conn = psycopg.connect(pg_url)  # closed as the test returns: nothing else holds it
    conn.execute("SELECT 1")

def test_explains_on_unmockeds_own_connection(queries, pg_url):
    # queries is set up first, so its explaining connection outlives pg_url's end.
    with psycopg.connect(pg_url) as conn:
        conn.execute("SELECT * FROM users WHERE email = 'x'")
    assert not queries.explain("SELECT * FROM users WHERE email = 'x'").unindexed

@pytest.fixture
def engine(pg_url):
    engine = create_engine(sqlalchemy_url(pg_url))
    yield engine
    engine.dispose()

def test_uses_an_engine_a_fixture_disposes(engine):
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
"""

LEAKING = (
    "test_leaves_a_connection_open",
    "test_leaves_one_idle_in_a_transaction",
    "test_never_disposes_its_engine",
)


@pytest.fixture
def leaky_project(user_project: pytest.Pytester) -> pytest.Pytester:
    pytest.importorskip("sqlalchemy")
    user_project.makepyfile(test_leaky=SUITE)
    return user_project


def said(output: str) -> list[str]:
    """The leak paragraphs in a run's output, one line each; not the short summary's lines,
    which repeat them whole when the ``CI`` variable is set."""
    before_summary = output.partition("short test summary info")[0]
    return re.findall(
        r"test_leaky\.py::\w+ left \d+ connections? open to its database: .*", before_summary
    )


def test_each_connection_a_test_leaves_is_named_in_a_warning_on_that_test(
    leaky_project: pytest.Pytester,
) -> None:
    result = leaky_project.runpytest_subprocess("-p", "no:randomly")
    output = result.stdout.str()
    result.assert_outcomes(passed=8)
    paragraphs = said(output)
    # (Warnings are not counted: on a shared server other runs' databases may be named too.)
    assert [re.match(r"test_leaky\.py::(\w+)", p)[1] for p in paragraphs] == list(LEAKING), output
    opened, in_transaction, engine = paragraphs
    # The warnings summary names each test, above its warning.
    for test in LEAKING:
        assert f"test_leaky.py::{test}\n  " in output, output
    assert re.search(
        r"left 1 connection open to its database: application_name 'myapp' "
        r"\(idle for \d+ ms, since: SELECT \?\)\. unmocked ended them",
        opened,
    ), opened
    assert re.search(
        r"application_name 'txapp' \(idle in transaction for \d+ ms, "
        r"since: SELECT count\(\*\) FROM users WHERE email = \?\)",
        in_transaction,
    ), in_transaction
    assert "secret@example.com" not in output
    # The pool's reset on return was the engine's connection's last word.
    assert re.search(r"no application_name \(idle for \d+ ms, since: ROLLBACK\)", engine), engine
    assert "engine.dispose()" in engine and "NullPool" in engine


def test_fail_errors_the_leaking_test_at_teardown_and_the_next_starts_clean(
    leaky_project: pytest.Pytester,
) -> None:
    result = leaky_project.runpytest_subprocess("-p", "no:randomly", "--unmocked-leaks", "fail")
    output = result.stdout.str()
    result.assert_outcomes(passed=8, errors=3)
    for test in LEAKING:
        assert f"ERROR at teardown of {test}" in output, output
        assert f"ERROR test_leaky.py::{test} - Failed" in output, output
    assert len(said(output)) == 3
    assert "Traceback" not in output and "session.py" not in output, output
    assert "UnmockedWarning: test_leaky" not in output


def test_off_says_nothing(leaky_project: pytest.Pytester) -> None:
    leaky_project.makeini(
        "[pytest]\nunmocked_migrations = migrations\nunmocked_leaks = off\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    result = leaky_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=8)
    assert not said(result.stdout.str())


def test_warnings_as_errors_error_the_test_and_still_release_its_database(
    leaky_project: pytest.Pytester,
) -> None:
    result = leaky_project.runpytest_subprocess(
        "-p", "no:randomly", "-W", "error::unmocked.UnmockedWarning"
    )
    output = result.stdout.str() + result.stderr.str()
    outcomes = result.parseoutcomes()
    # At least: on a shared server another run's database may be named in a warning too.
    assert outcomes["passed"] == 8 and outcomes["errors"] >= 3, output
    for test in LEAKING:
        assert f"ERROR at teardown of {test}" in output, output
    assert "INTERNALERROR" not in output
    # Released, not kept: the error comes after the database was put back.
    assert "kept the database" not in output


def test_under_xdist_each_worker_names_its_own_tests(leaky_project: pytest.Pytester) -> None:
    result = leaky_project.runpytest_subprocess("-p", "no:randomly", "-n", "2")
    output = result.stdout.str()
    result.assert_outcomes(passed=8)
    assert sorted(re.match(r"test_leaky\.py::(\w+)", p)[1] for p in said(output)) == sorted(
        LEAKING
    ), output


def test_a_failed_test_that_leaks_keeps_its_database_and_still_gets_the_report(
    user_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    user_project.makepyfile(
        test_kept="""
        import psycopg

        LEFT_OPEN = []

        def test_fails_holding_a_transaction(pg_url):
            conn = psycopg.connect(pg_url, application_name="failing")
            conn.execute("INSERT INTO users (email) VALUES ('b@example.com')")
            LEFT_OPEN.append(conn)
            assert False, "on purpose"

        def test_its_session_was_ended(pg_url):
            with psycopg.connect(pg_url) as conn:
                pid = LEFT_OPEN[0].info.backend_pid
                assert conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()[0] == 0
        """
    )
    result = user_project.runpytest_subprocess("-p", "no:randomly")
    output = result.stdout.str()
    result.assert_outcomes(passed=1, failed=1)
    assert re.search(
        r"test_kept\.py::test_fails_holding_a_transaction left 1 connection open to its "
        r"database: application_name 'failing' \(idle in transaction for \d+ ms, since: INSERT",
        output,
    ), output
    kept = re.search(r"kept the database of failed \S+: unmocked psql (\S+)", output)
    assert kept, output
    collected = run_unmocked("gc", env={**os.environ, **provider})
    if f"dropped {kept[1]}" not in collected.stdout:
        # On a server shared by the run (url), the other xdist worker's tests run gc too, and one
        # may have collected it first: then it must be gone.
        url = provider.get("UNMOCKED_DATABASE_URL")
        assert url, collected.stdout + collected.stderr
        gone = query(url, f"SELECT count(*) FROM pg_database WHERE datname = '{kept[1]}'") == 0
        assert gone, collected.stdout + collected.stderr


def test_an_unknown_value_is_one_paragraph_naming_the_setting(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_values({}, {"UNMOCKED_LEAKS": "loud"}, tmp_path)
    assert str(raised.value) == (
        "unmocked_leaks = 'loud' is not a mode unmocked knows. Use one of: off, warn, fail."
    )
    pytester.makeini("[pytest]\nunmocked_leaks = sometimes\n")
    result = pytester.runpytest_subprocess()
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "unmocked_leaks = 'sometimes' is not a mode unmocked knows" in output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
