"""A test that ends unmocked's own sessions (``pg_terminate_backend`` of every other session) breaks
no later test: they are opened again, the lease first, and the run says which test did it.

While the lease is gone another run may take this run for dead and collect its databases; such a
collection is run inside the test, in that very window, and the databases still in use survive it.
"""

from __future__ import annotations

import psycopg
import pytest

from helpers import EACH_KIND_OF_SERVER, RUNNING_SERVER_URL, server_answers
from unmocked import ownership
from unmocked.ownership import Owner
from unmocked.urls import with_database

PROVIDERS = EACH_KIND_OF_SERVER

ENDS_OUR_SESSIONS = '''
import os
import time

import psycopg
import pytest
from unmocked import ownership


def other_sessions(conn, unmocked_session):
    """On a server of unmocked's own, every other session, as a careless test would end them; on
    the shared server given by URL, only this run's: other runs' are not this test's to end."""
    if os.environ["UNMOCKED_PROVIDER"] != "url":
        return "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    ours = [unmocked_session._admin, unmocked_session._lease.conn]
    ours += unmocked_session._rollback_connections.values()
    pids = ", ".join(str(c.info.backend_pid) for c in ours if not c.closed)
    return f"SELECT pid FROM pg_stat_activity WHERE pid IN ({pids}) AND pid <> pg_backend_pid()"


def test_00_pg_before(pg):
    pg.execute("INSERT INTO users (email) VALUES ('before@example.com')")


@pytest.mark.parametrize("turn", range(2))
def test_00_pg_url_before(pg_url, turn):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('before@example.com')")


def test_01_ends_every_other_session(pg_url, pg_server, unmocked_session):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pids = [row[0] for row in conn.execute(other_sessions(conn, unmocked_session))]
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
        # Another run starts right now and collects what dead runs left.
        with psycopg.connect(pg_server.url, autocommit=True) as other_run:
            deadline = time.monotonic() + 5
            while ownership.run_is_alive(other_run, unmocked_session.run_id):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            ownership.collect_abandoned(other_run)
        conn.execute("INSERT INTO users (email) VALUES ('mine@example.com')")


@pytest.mark.parametrize("turn", range(3))
def test_02_pg_url_after(pg_url, turn):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        conn.execute("INSERT INTO users (email) VALUES ('after@example.com')")


@pytest.mark.parametrize("turn", range(2))
def test_03_pg_after(pg, turn):
    assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 0
    pg.execute("INSERT INTO users (email) VALUES ('after@example.com')")
    pg.commit()


def test_04_the_lease_is_held_again(pg_server, unmocked_session):
    with psycopg.connect(pg_server.url, autocommit=True) as other_run:
        assert ownership.run_is_alive(other_run, unmocked_session.run_id)
'''


def test_a_test_that_ends_unmockeds_sessions_breaks_no_later_test_and_is_named(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(test_ends=ENDS_OUR_SESSIONS)
    result = user_project.runpytest("-p", "no:randomly")
    output = result.stdout.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    result.assert_outcomes(passed=10, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*test_01_ends_every_other_session ended unmocked's own sessions on the server*"
            "took the lease again*"
        ]
    )
    assert result.ret == 0


def test_a_test_that_ends_them_from_the_pg_connection_is_named_too(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(
        test_ends=ENDS_OUR_SESSIONS.split("def test_00_pg_before")[0]
        + """
def test_01_ends_them_from_pg(pg, unmocked_session):
    pids = [row[0] for row in pg.execute(other_sessions(pg, unmocked_session))]
    pg.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))


def test_02_pg_url_after(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('after@example.com')")


def test_03_pg_after(pg):
    assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 0
"""
    )
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(["*test_01_ends_them_from_pg ended unmocked's own sessions*"])


def test_sessions_ended_a_moment_before_unmocked_looked_are_opened_again_all_the_same(
    user_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_terminate_backend returns before the sessions are gone: the next test's look at the
    sockets may find nothing yet, and its first use of the admin session meets the end. Played
    here by a look that sees only sessions psycopg already knows are broken (the test runs
    in-process, so the inner run shares the patched module). The test that ends them uses no
    database of unmocked's, whose end would have met the ended sessions first."""
    monkeypatch.setattr(ownership, "session_ended", ownership.session_ended)  # put back after
    suite = (
        ENDS_OUR_SESSIONS.split("def test_00_pg_before")[0]
        + """
real_look = ownership.session_ended


def test_01_ends_them_and_the_look_comes_too_early(pg_server, unmocked_session):
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        pids = [row[0] for row in conn.execute(other_sessions(conn, unmocked_session))]
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
        while conn.execute("SELECT FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone():
            time.sleep(0.01)
    ownership.session_ended = lambda pgconn: pgconn.status == pq.ConnStatus.BAD


@pytest.mark.parametrize("fixture", ["pg_url", "pg"])
def test_02_the_next_test_gets_its_database(request, fixture):
    request.getfixturevalue(fixture)
    ownership.session_ended = real_look
"""
    )
    user_project.makepyfile(
        test_ends=suite.replace("import pytest\n", "import pytest\nfrom psycopg import pq\n", 1)
    )
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(
        ["*test_01_ends_them_and_the_look_comes_too_early ended unmocked's*"]
    )


def test_templates_collected_while_the_run_held_nothing_are_built_again(
    user_project: pytest.Pytester,
) -> None:
    """While its sessions are gone the run holds none of its templates, so another run's
    collection may drop them as old (past the 20 most recent on a busy server): later tests get
    them built again instead of "template database ... does not exist"."""
    collects = """
            sources = [unmocked_session.template().name, unmocked_session._fresh._source]
            for name in sources:  # as a collection of old templates would
                ownership.drop_database(other_run, name)
"""
    suite = ENDS_OUR_SESSIONS.replace(
        "            ownership.collect_abandoned(other_run)\n",
        "            ownership.collect_abandoned(other_run)\n" + collects.lstrip("\n"),
    )
    assert suite != ENDS_OUR_SESSIONS
    user_project.makepyfile(test_ends=suite)
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=10, warnings=1)


def test_a_collection_leaves_a_dead_runs_database_alone_while_a_session_uses_it() -> None:
    # A run whose lease a test ended looks dead until it takes the lease again; the databases it
    # is using right then have sessions, which keep them from collection.
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    dead_run = ownership.new_run_id()
    name = f"{ownership.PREFIX}test_{dead_run}_fresh"
    with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as admin:
        ownership.create_database(admin, name, Owner("fresh", run=dead_run), "template0", None)
        try:
            with psycopg.connect(with_database(RUNNING_SERVER_URL, name)):
                assert name not in ownership.collect_abandoned(admin)
            ownership.wait_for_sessions_to_end(admin, name)
            assert name in ownership.collect_abandoned(admin)
        finally:
            ownership.drop_database(admin, name)
