"""``pg_url`` gives each test a migrated database of its own where every connection sees real
commits; once the test ended, its URL leads nowhere (the database is reset under a new name)."""

from __future__ import annotations

import pytest

from helpers import EACH_KIND_OF_SERVER

PROVIDERS = EACH_KIND_OF_SERVER


def test_fresh_database_sees_commits_from_other_connections(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(
        """
        import threading
        import psycopg

        def test_two_connections(pg_url):
            writer = psycopg.connect(pg_url, autocommit=True)
            reader = psycopg.connect(pg_url)
            writer.execute("INSERT INTO users (email) VALUES ('a@example.com')")
            assert reader.execute("SELECT count(*) FROM users").fetchone()[0] == 1
            writer.close(); reader.close()

        def test_skip_locked_hands_each_row_to_one_worker(pg_url):
            with psycopg.connect(pg_url, autocommit=True) as setup:
                setup.execute("INSERT INTO users (email) VALUES ('u1'), ('u2'), ('u3'), ('u4')")
            first, second = psycopg.connect(pg_url), psycopg.connect(pg_url)
            claim = "SELECT id FROM users ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED"
            mine = {row[0] for row in first.execute(claim)}
            theirs = {row[0] for row in second.execute(claim)}
            assert len(mine) == len(theirs) == 2 and not mine & theirs
            first.close(); second.close()

        def test_ddl_outside_a_transaction(pg_url):
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("CREATE INDEX CONCURRENTLY users_email_lower ON users (lower(email))")
        """
    )
    user_project.runpytest().assert_outcomes(passed=3)


def test_fresh_database_url_is_dead_once_the_test_ended(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        """
        import psycopg
        import pytest
        from unmocked.urls import database_of

        seen = []

        def test_a_uses_a_database(pg_url):
            seen.append(pg_url)
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")

        def test_b_its_url_is_dead_and_mine_is_empty(pg_url, pg_server):
            assert database_of(pg_url) != database_of(seen[0])
            with psycopg.connect(pg_server.url, autocommit=True) as admin:
                gone = admin.execute(
                    "SELECT count(*) FROM pg_database WHERE datname = %s", (database_of(seen[0]),)
                ).fetchone()[0]
            assert gone == 0
            with pytest.raises(psycopg.OperationalError, match="does not exist"):
                psycopg.connect(seen[0])
            with psycopg.connect(pg_url) as conn:
                assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        """
    )
    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


def test_a_busy_test_does_not_hold_up_drop_database_by_the_reset_it_follows(
    user_project: pytest.Pytester,
) -> None:
    """The reset of the test before opens its session while the next test runs; a handshake left
    half-done would keep every DROP DATABASE on the server waiting (up to authentication_timeout)
    for as long as that test keeps the interpreter busy. Another process drops a database while
    this test spins in Python from the first moment on: a stuck handshake would hold the drop
    until the server's authentication_timeout (60 s by default) ended the half-open session; a
    busy shared server takes seconds at most."""
    user_project.makepyfile(
        """
        import subprocess, sys
        import psycopg

        DROPS = '''
        import sys, time, psycopg
        from psycopg.conninfo import make_conninfo
        admin = psycopg.connect(sys.argv[1], autocommit=True)
        admin.execute("CREATE DATABASE busy_test_scratch")
        started = time.monotonic()
        admin.execute("DROP DATABASE busy_test_scratch")
        print(time.monotonic() - started)
        '''

        def test_a_writes(pg_url):
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")

        def test_b_spins_while_another_process_drops_a_database(pg_server):
            dropping = subprocess.Popen(
                [sys.executable, "-c", DROPS.replace("\\n        ", "\\n"), pg_server.url],
                stdout=subprocess.PIPE, text=True,
            )
            while dropping.poll() is None:
                sum(range(20000))  # holds the interpreter lock but for its forced switches
            assert dropping.returncode == 0
            assert float(dropping.stdout.read()) < 30
        """
    )
    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=2)
