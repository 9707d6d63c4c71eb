"""The rollback fixtures (``pg``, ``sa_session``) keep every test's effects from every other test,
while code under test keeps production's commit, rollback and error semantics. Each guarantee is
checked by running a whole pytest session as a user would, through every provider."""

from __future__ import annotations

import re

import pytest

ALSO_AS_A_CREATEDB_ROLE = True

LEAKY_SUITE = """
import pytest

@pytest.mark.parametrize("attempt", range(3))
def test_writes_and_commits(pg, attempt):
    pg.execute("INSERT INTO users (email) VALUES ('leak@example.com')")
    pg.commit()
    pg.execute("INSERT INTO users (email) VALUES ('second@example.com')")
    with pg.transaction():
        pg.execute("INSERT INTO users (email) VALUES ('third@example.com')")
    assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 3

@pytest.mark.parametrize("attempt", range(3))
def test_sees_no_rows_of_other_tests(pg, attempt):
    assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 0

@pytest.mark.parametrize("attempt", range(3))
def test_session_commits_too(sa_session, attempt):
    from sqlalchemy import text
    sa_session.execute(text("INSERT INTO users (email) VALUES ('leak@example.com')"))
    sa_session.commit()
    assert sa_session.execute(text("SELECT count(*) FROM users")).scalar() == 1
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_commit_by_code_under_test_is_invisible_to_the_next_test(
    user_project: pytest.Pytester, seed: int
) -> None:
    user_project.makepyfile(test_leaks=LEAKY_SUITE)
    result = user_project.runpytest("-p", "randomly", f"--randomly-seed={seed}")
    result.assert_outcomes(passed=9)


def test_error_inside_transaction_leaves_the_connection_usable(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(
        """
        import psycopg, pytest

        def test_unique_violation_inside_a_block(pg):
            pg.execute("INSERT INTO users (email) VALUES ('a@example.com')")
            with pytest.raises(psycopg.errors.UniqueViolation):
                with pg.transaction():
                    pg.execute("INSERT INTO users (email) VALUES ('a@example.com')")
            assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 1

        def test_error_outside_a_block_then_rollback(pg):
            pg.execute("INSERT INTO users (email) VALUES ('kept@example.com')")
            pg.commit()
            with pytest.raises(psycopg.errors.UndefinedTable):
                pg.execute("SELECT * FROM no_such_table")
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                pg.execute("SELECT 1")
            pg.rollback()
            emails = pg.execute("SELECT email FROM users").fetchall()
            assert emails == [("kept@example.com",)]

        def test_commit_of_a_failed_transaction_rolls_it_back(pg):
            pg.execute("INSERT INTO users (email) VALUES ('gone@example.com')")
            with pytest.raises(psycopg.errors.DivisionByZero):
                pg.execute("SELECT 1 / 0")
            pg.commit()
            assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        """
    )
    user_project.runpytest().assert_outcomes(passed=3)


def test_commit_checks_deferred_constraints_as_a_real_commit_would(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(
        """
        import psycopg, pytest
        from sqlalchemy import text
        from sqlalchemy.exc import IntegrityError

        def test_psycopg_commit(pg):
            pg.execute("INSERT INTO orders (user_id, amount) VALUES (42, 1)")  # deferred: no error
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                pg.commit()
            assert pg.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
            # The next unit of work starts deferred again, as a new transaction would.
            pg.execute("INSERT INTO orders (user_id, amount) VALUES (42, 1)")
            pg.execute("INSERT INTO users (id, email) VALUES (42, 'late@example.com')")
            pg.commit()

        def test_constraints_the_test_itself_adds_or_drops(pg):
            pg.execute("CREATE TABLE parents (id int PRIMARY KEY)")
            pg.execute(
                "CREATE TABLE children (parent_id int "
                "REFERENCES parents DEFERRABLE INITIALLY DEFERRED)"
            )
            pg.commit()
            pg.execute("INSERT INTO children VALUES (1)")  # still deferred after the commit
            pg.execute("INSERT INTO parents VALUES (1)")
            pg.commit()
            pg.execute("ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey")
            pg.commit()  # the dropped constraint is not switched back to DEFERRED
            pg.execute("INSERT INTO children VALUES (2)")
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                pg.commit()

        def test_transaction_block_commits_on_exit(pg):
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                with pg.transaction():
                    pg.execute("INSERT INTO orders (user_id, amount) VALUES (7, 1)")

        def test_sqlalchemy_commit(sa_session):
            sa_session.execute(text("INSERT INTO orders (user_id, amount) VALUES (42, 1)"))
            with pytest.raises(IntegrityError):
                sa_session.commit()
            sa_session.rollback()
            assert sa_session.execute(text("SELECT count(*) FROM orders")).scalar() == 0
        """
    )
    user_project.runpytest().assert_outcomes(passed=4)


def test_pg_and_sa_session_share_one_transaction(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        """
        from sqlalchemy import text

        def test_both_see_each_other(pg, sa_session):
            pg.execute("INSERT INTO users (email) VALUES ('raw@example.com')")
            assert sa_session.execute(text("SELECT count(*) FROM users")).scalar() == 1
            sa_session.execute(text("INSERT INTO users (email) VALUES ('orm@example.com')"))
            sa_session.flush()
            assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 2
        """
    )
    user_project.runpytest().assert_outcomes(passed=1)


EMPTY_UNITS_OF_WORK = """
import tempfile

import psycopg
import pytest
from sqlalchemy import text

COUNT = "SELECT count(*) FROM users"

def sent(conn, action):
    # What the client put on the wire while action ran, from libpq's own trace of it.
    with tempfile.TemporaryFile() as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            action()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        lines = trace.read().decode().splitlines()
        return [line.split("\\t", 3)[3] for line in lines if "\\tF\\t" in line]

def test_empty_commit_and_rollback_send_nothing_and_change_nothing(pg):
    assert sent(pg, pg.rollback) == [] and sent(pg, pg.commit) == []
    pg.execute("INSERT INTO users (email) VALUES ('kept@example.com')")
    assert sent(pg, pg.commit) != []
    assert sent(pg, pg.rollback) == [] and sent(pg, pg.commit) == []
    assert pg.execute(COUNT).fetchone()[0] == 1
    pg.execute("INSERT INTO users (email) VALUES ('undone@example.com')")
    assert sent(pg, pg.rollback) != []
    assert pg.execute(COUNT).fetchone()[0] == 1

def test_every_way_of_sending_is_still_rolled_back(pg):
    with pg.cursor() as cursor:
        cursor.executemany("INSERT INTO users (email) VALUES (%s)", [("a@x",), ("b@x",)])
    pg.rollback()
    with pg.cursor().copy("COPY users (email) FROM STDIN") as copy:
        copy.write_row(("c@x",))
    pg.rollback()
    with pg.pipeline():
        pg.execute("INSERT INTO users (email) VALUES ('d@x')")
    pg.rollback()
    with pg.cursor(name="server_side") as cursor:
        cursor.execute("SELECT nextval('users_id_seq'), set_config('app.mark', 'set', true)")
        cursor.fetchall()
    pg.rollback()
    with pg.transaction():
        pg.execute("INSERT INTO users (email) VALUES ('e@x')")
    pg.execute("INSERT INTO users (email) VALUES ('f@x')")
    pg.rollback()
    assert pg.execute(COUNT).fetchone()[0] == 1  # e@x, committed by its block
    assert pg.execute("SELECT current_setting('app.mark', true)").fetchone()[0] in (None, "")

def test_a_failed_statement_then_an_empty_looking_rollback(pg):
    with pytest.raises(psycopg.errors.UndefinedTable):
        pg.execute("SELECT * FROM no_such_table")
    pg.rollback()
    assert pg.execute(COUNT).fetchone()[0] == 0

def test_rollback_inside_a_transaction_block_is_still_refused(pg):
    with pg.transaction():
        with pytest.raises(psycopg.ProgrammingError):
            pg.rollback()

def test_a_session_returning_its_connection_after_commit_sends_no_rollback(pg, sa_session):
    sa_session.execute(text("INSERT INTO users (email) VALUES ('orm@example.com')"))
    assert not [line for line in sent(pg, sa_session.commit) if "ROLLBACK" in line]
    assert sent(pg, sa_session.close) == []
    assert sa_session.execute(text(COUNT)).scalar() == 1

@pytest.mark.asyncio
async def test_async_twin(apg):
    await apg.execute("INSERT INTO users (email) VALUES ('kept@example.com')")
    await apg.commit()
    await apg.rollback()
    await apg.commit()
    await apg.execute("INSERT INTO users (email) VALUES ('undone@example.com')")
    await apg.rollback()
    assert (await (await apg.execute(COUNT)).fetchone())[0] == 1

def test_z_sees_none_of_it(pg):
    assert pg.execute(COUNT).fetchone()[0] == 0
"""


def test_empty_units_of_work_send_nothing_and_every_statement_still_counts(
    user_project: pytest.Pytester,
) -> None:
    """``commit()`` and ``rollback()`` of a unit of work nothing was sent in are skipped (a
    Session's close after its commit, the pool's reset); whatever sent a statement (a cursor,
    ``executemany``, ``COPY``, a pipeline, a server-side cursor, a ``transaction()`` block) still
    has its unit rolled back, and the guards of the full path still hold."""
    user_project.makepyfile(test_units=EMPTY_UNITS_OF_WORK)
    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=7)


A_RAW_COMMIT_THEN_A_TEST_THAT_SEES_NOTHING = """
def test_a_raw_commit(pg):
    pg.execute("INSERT INTO users (email) VALUES ('raw@example.com')")
    pg.execute("COMMIT")

def test_b_sees_nothing(pg):
    assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 0
"""


def test_raw_commit_statement_is_still_isolated_and_warned_about(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(A_RAW_COMMIT_THEN_A_TEST_THAT_SEES_NOTHING)
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*ended unmocked's outer transaction*"])


def test_unmocked_warnings_can_be_made_errors_and_isolation_still_holds(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(A_RAW_COMMIT_THEN_A_TEST_THAT_SEES_NOTHING)
    result = user_project.runpytest("-p", "no:randomly", "-W", "error::unmocked.UnmockedWarning")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*UnmockedWarning: *ended unmocked's outer transaction*"])


def test_session_state_does_not_leak_between_tests(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        """
        def test_a_leaves_session_state(pg):
            pg.execute("PREPARE q AS SELECT 1")
            pg.execute("SELECT pg_advisory_lock(1)")
            pg.execute("SELECT nextval('users_id_seq')")
            pg.commit()

        def test_b_starts_clean(pg):
            assert pg.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
            locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s"
            assert pg.execute(locks, (pg.info.backend_pid,)).fetchone()[0] == 0
        """
    )
    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


PREPARED_STATEMENTS = """
import pytest

# psycopg prepares a statement the sixth time it sees it: once per test, from the sixth test on.
SELECT_ALL = "SELECT * FROM users"


@pytest.mark.parametrize("number", range(7))
def test_01_prepared_by_psycopg_across_tests(pg, number):
    pg.execute("INSERT INTO users (email) VALUES (%s)", (f"{number}@x",))
    pg.commit()
    assert [email for _id, email in pg.execute(SELECT_ALL)] == [f"{number}@x"]


def test_02_psycopg_keeps_what_it_prepared(pg):
    assert pg.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] > 0


def test_03_changes_the_table_then_prepares_on_it(pg):
    pg.execute("ALTER TABLE users ADD COLUMN nickname text")
    for _ in range(7):
        assert len(pg.execute(SELECT_ALL).description) == 3


def test_04_sees_the_schema_of_the_template(pg):
    assert len(pg.execute(SELECT_ALL).description) == 2


def test_05_a_new_table_the_next_test_makes_again_other_columns(pg):
    pg.execute("DO $$ BEGIN CREATE TABLE gadgets (id int); END $$")
    for _ in range(7):
        assert pg.execute("SELECT * FROM gadgets").fetchall() == []


def test_06_the_same_table_other_columns(pg):
    pg.execute("CREATE TABLE gadgets (name text, weight int)")
    assert len(pg.execute("SELECT * FROM gadgets").description) == 2


def test_07_deallocates_psycopgs_statements_behind_its_back(pg):
    for _ in range(7):
        pg.execute(SELECT_ALL)
    pg.execute("DEALLOCATE ALL")
    pg.execute("PREPARE mine AS SELECT 1")


def test_08_runs_them_again_and_sees_none_of_the_tests_own(pg):
    for _ in range(7):
        pg.execute(SELECT_ALL)
    names = [row[0] for row in pg.execute("SELECT name FROM pg_prepared_statements")]
    assert "mine" not in names


def test_09_a_test_that_rolls_back(pg):
    pg.execute(SELECT_ALL)
    pg.rollback()
    pg.execute(SELECT_ALL)


def test_10_after_it(pg):
    assert pg.execute(SELECT_ALL).fetchall() == []
"""


def test_statements_psycopg_prepared_in_one_test_never_change_what_the_next_one_sees(
    user_project: pytest.Pytester,
) -> None:
    """psycopg's prepared statements are kept from test to test, as on a long-lived connection,
    but never one prepared on a schema the test changed, nor the test's own, nor a name the
    server lost."""
    user_project.makepyfile(PREPARED_STATEMENTS)
    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=16)


SECOND_CONNECTIONS = '''
import threading

import psycopg
import pytest


def count(pg):
    return pg.execute("SELECT count(*) FROM users").fetchone()[0]


def commit_from_a_thread(pg, statement, close):
    """What code under test does: a thread of its own, a connection of its own, a commit."""
    opened = []

    def work():
        conn = psycopg.connect(pg.info.dsn, password=pg.info.password, autocommit=True)
        conn.execute(statement)
        if close:
            conn.close()
        else:
            opened.append(conn)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return opened


LEFT_OPEN = []


def test_01_thread_commits_and_closes_right_before_the_test_ends(pg):
    commit_from_a_thread(pg, "INSERT INTO users (email) VALUES ('closed@x')", True)


def test_02_sees_nothing(pg):
    assert count(pg) == 0


def test_03_thread_commits_and_leaves_its_connection_open(pg):
    LEFT_OPEN.extend(
        commit_from_a_thread(pg, "INSERT INTO users (email) VALUES ('open@x')", False)
    )


def test_04_sees_nothing(pg):
    assert count(pg) == 0


def test_05_thread_commits_ddl_and_closes(pg):
    commit_from_a_thread(pg, "CREATE TABLE leaked (x int)", True)


def test_06_sees_no_table(pg):
    assert pg.execute("SELECT to_regclass('leaked')").fetchone()[0] is None


def test_07_thread_truncates_and_closes(pg):
    commit_from_a_thread(pg, "TRUNCATE users CASCADE", True)


@pytest.mark.asyncio
async def test_08_async_rollback_connection_sits_in_the_database_too(apg):
    assert (await (await apg.execute("SELECT count(*) FROM users")).fetchone())[0] == 0


def test_09_a_second_connection_that_only_reads_and_closes(pg):
    commit_from_a_thread(pg, "SELECT count(*) FROM users", True)


def test_10_pg_after_apg_and_a_reader(pg):
    assert count(pg) == 0


def test_11_closes_what_test_03_left_open():
    for conn in LEFT_OPEN:
        conn.close()  # its session was ended with its database; this closes our end of it
'''


def test_a_second_connection_that_commits_is_invisible_to_the_next_test_and_named(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(test_second=SECOND_CONNECTIONS)
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=11, warnings=4)
    output = result.stdout.str()
    for test in ("test_01", "test_05", "test_07"):
        assert re.search(rf"{test}\S* committed changes to the rollback database", output), output
    assert re.search(r"test_03\S* left a connection of its own", output), output
    # Reading from a second connection leaks nothing: no rebuild, no warning.
    assert "test_09" not in output.split("warnings summary")[1], output
