"""``sa_async_session`` over asyncpg keeps one connection per event loop, from test to test, and
still keeps every guarantee of a connection per test: nothing a test did is seen by the next, a test
that commits itself has the database rebuilt, a test that ends the kept session has the next get a
new one, the kept connection is unmocked's own (never an outside session to a ``pg`` test), and
loops of different scopes in one module each have their own."""

from __future__ import annotations

import pytest

from helpers import EACH_KIND_OF_SERVER

# Imported once here, not in each in-process pytester run (see test_async.py).
pytest.importorskip("sqlalchemy.dialects.postgresql.asyncpg")
pytest.importorskip("asyncpg")

PROVIDERS = EACH_KIND_OF_SERVER

PIDS = """
import pytest
from sqlalchemy import text

PIDS = []


async def backend_pid(session):
    return (await session.execute(text("SELECT pg_backend_pid()"))).scalar()


async def users(session):
    return (await session.execute(text("SELECT count(*) FROM users"))).scalar()
"""


def write_suite(project: pytest.Pytester, tests: str) -> None:
    """A test module of ``tests`` after the helpers that read the backend's pid and the rows."""
    project.makepyfile(PIDS + tests)


def write_module_loop_suite(project: pytest.Pytester, tests: str) -> None:
    """:func:`write_suite`, every test in the module's event loop (so on one kept connection)."""
    write_suite(project, 'pytestmark = pytest.mark.asyncio(loop_scope="module")\n' + tests)


def passes_warning_of_each(project: pytest.Pytester, passed: int, *warnings: str) -> None:
    """Run the suite: ``passed`` tests pass, and one warning matches each of ``warnings``."""
    result = project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=passed, warnings=len(warnings))
    result.stdout.fnmatch_lines(list(warnings))


def test_a_module_loop_keeps_one_connection_and_a_raw_commit_still_rebuilds_the_database(
    user_project: pytest.Pytester,
) -> None:
    write_module_loop_suite(
        user_project,
        """
async def test_1_commits_with_a_raw_commit(sa_async_session):
    PIDS.append(await backend_pid(sa_async_session))
    await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('raw@x')"))
    await sa_async_session.execute(text("COMMIT"))

async def test_2_sees_nothing_on_a_new_connection(sa_async_session):
    assert await users(sa_async_session) == 0
    PIDS.append(await backend_pid(sa_async_session))
    assert PIDS[1] != PIDS[0]
    await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('kept@x')"))
    await sa_async_session.commit()

async def test_3_sees_nothing_on_the_kept_connection(sa_async_session):
    assert await users(sa_async_session) == 0
    assert await backend_pid(sa_async_session) == PIDS[1]
""",
    )
    passes_warning_of_each(
        user_project, 3, "*test_1_commits_with_a_raw_commit ended unmocked's outer*"
    )


def test_what_a_rollback_leaves_of_the_kept_session_is_reset_for_the_next_test(
    user_project: pytest.Pytester,
) -> None:
    write_module_loop_suite(
        user_project,
        """
async def test_1_leaves_a_lock_a_prepared_statement_and_a_sequence_value(sa_async_session):
    await sa_async_session.execute(text("SELECT pg_advisory_lock(7)"))
    await sa_async_session.execute(text("PREPARE mine AS SELECT 1"))
    await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('a@x')"))
    PIDS.append(await backend_pid(sa_async_session))

async def test_2_starts_clean_on_the_same_backend(sa_async_session):
    assert await backend_pid(sa_async_session) == PIDS[0]
    locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    assert (await sa_async_session.execute(text(locks))).scalar() == 0
    prepared = "SELECT count(*) FROM pg_prepared_statements WHERE from_sql"
    assert (await sa_async_session.execute(text(prepared))).scalar() == 0
    await sa_async_session.execute(text("PREPARE mine AS SELECT 1"))  # the name is free again
    with pytest.raises(Exception, match="lastval is not yet defined"):
        await sa_async_session.execute(text("SELECT lastval()"))
""",
    )
    user_project.runpytest("-p", "no:randomly", "-W", "error").assert_outcomes(passed=2)


def test_a_test_that_never_uses_its_session_keeps_the_connection_and_the_database_quietly(
    user_project: pytest.Pytester,
) -> None:
    """SQLAlchemy begins the outer transaction with the session's first statement: a test that
    sends none has none, which is not a test that ended it (no warning, no rebuilt database)."""
    write_module_loop_suite(
        user_project,
        """
async def test_1_writes(sa_async_session):
    await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('one@x')"))
    PIDS.append(await backend_pid(sa_async_session))

async def test_2_asks_and_sends_nothing(sa_async_session):
    pass

async def test_3_opens_and_closes_its_transaction_without_a_statement(sa_async_session):
    await sa_async_session.commit()
    await sa_async_session.rollback()
    await sa_async_session.close()

async def test_4_is_on_the_same_connection_and_sees_nothing(sa_async_session):
    assert await backend_pid(sa_async_session) == PIDS[0]
    assert await users(sa_async_session) == 0
""",
    )
    user_project.runpytest("-p", "no:randomly", "-W", "error").assert_outcomes(passed=4)


def test_a_statement_sent_past_sqlalchemy_before_any_other_still_rebuilds_the_database(
    user_project: pytest.Pytester,
) -> None:
    """asyncpg itself, on a connection SQLAlchemy has not begun a transaction on yet, commits
    each statement at once: the test did not end the outer transaction, but its write is in."""
    write_module_loop_suite(
        user_project,
        """
async def test_1_writes_through_asyncpg_itself(sa_async_session):
    raw = await sa_async_session.bind.get_raw_connection()
    await raw.driver_connection.execute("INSERT INTO users (email) VALUES ('raw@x')")

async def test_2_sees_nothing(sa_async_session):
    assert await users(sa_async_session) == 0
""",
    )
    passes_warning_of_each(
        user_project, 2, "*test_1_writes_through_asyncpg_itself ended unmocked's outer*"
    )


OWN_CONNECTION = """
import psycopg

def own_connection(session):
    \"\"\"A connection the code under test opens itself, to the database it was handed.\"\"\"
    url = session.bind.engine.url.set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
"""


def test_a_write_committed_from_a_connection_of_the_tests_own_is_caught_and_undone(
    user_project: pytest.Pytester,
) -> None:
    write_module_loop_suite(
        user_project,
        OWN_CONNECTION
        + """
async def test_1_the_app_commits_on_its_own_connection(sa_async_session):
    await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('mine@x')"))
    with own_connection(sa_async_session) as own:
        own.execute("INSERT INTO users (email) VALUES ('escaped@x')")

async def test_2_sees_nothing(sa_async_session):
    assert await users(sa_async_session) == 0

async def test_3_only_the_app_writes_and_the_session_sends_nothing(sa_async_session):
    with own_connection(sa_async_session) as own:
        own.execute("INSERT INTO users (email) VALUES ('escaped@x')")

async def test_4_sees_nothing_either(sa_async_session):
    assert await users(sa_async_session) == 0
""",
    )
    passes_warning_of_each(
        user_project,
        4,
        "*test_1_the_app_commits_on_its_own_connection committed changes to the rollback*",
        "*test_3_only_the_app_writes_and_the_session_sends_nothing committed changes*",
    )


def test_a_connection_of_the_tests_own_left_open_is_caught(user_project: pytest.Pytester) -> None:
    write_module_loop_suite(
        user_project,
        OWN_CONNECTION
        + """
LEFT = []

async def test_1_leaves_its_own_connection_open(sa_async_session):
    await sa_async_session.execute(text("SELECT 1"))
    LEFT.append(own_connection(sa_async_session))

async def test_2_sees_nothing_of_it(sa_async_session):
    assert await users(sa_async_session) == 0
    LEFT[0].close()
""",
    )
    passes_warning_of_each(
        user_project, 2, "*test_1_leaves_its_own_connection_open left a connection*"
    )


def test_unmockeds_own_connections_between_kept_asyncpg_tests_are_no_outside_sessions(
    user_project: pytest.Pytester,
) -> None:
    write_module_loop_suite(
        user_project,
        """
async def test_1_asyncpg(sa_async_session):
    await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('a@x')"))
    PIDS.append(await backend_pid(sa_async_session))

@pytest.mark.asyncio(loop_scope="function")
async def test_2_pg_connects_meanwhile(pg):
    pg.execute("INSERT INTO users (email) VALUES ('b@x')")

async def test_3_asyncpg_again_on_the_same_connection(sa_async_session):
    assert await backend_pid(sa_async_session) == PIDS[0]
    assert await users(sa_async_session) == 0

async def test_4_and_again(sa_async_session):
    assert await backend_pid(sa_async_session) == PIDS[0]
""",
    )
    user_project.runpytest("-p", "no:randomly", "-W", "error").assert_outcomes(passed=4)


def test_a_commit_on_the_kept_connection_checks_the_constraints_the_test_itself_made_or_dropped(
    user_project: pytest.Pytester,
) -> None:
    write_module_loop_suite(
        user_project,
        """
from sqlalchemy.exc import IntegrityError

ORPHAN = "INSERT INTO orders (user_id, amount) VALUES (-1, 1)"
MINE = (
    "CREATE TABLE notes (id int PRIMARY KEY, user_id int NOT NULL"
    " CONSTRAINT \\"Note's User\\" REFERENCES users DEFERRABLE INITIALLY DEFERRED)"
)

async def orphan_is_deferred_then_refused(session):
    await session.execute(text(ORPHAN))  # deferred: no error yet
    with pytest.raises(IntegrityError):
        await session.commit()
    await session.rollback()

@pytest.mark.parametrize("turn", range(2))  # the second has the template's list kept
async def test_0_commits_with_the_template_constraints(sa_async_session, turn):
    await orphan_is_deferred_then_refused(sa_async_session)
    await sa_async_session.execute(text("INSERT INTO users (id, email) VALUES (1, 'a@x')"))
    await sa_async_session.commit()
    PIDS.append(await backend_pid(sa_async_session))
    assert PIDS[turn] == PIDS[0]

async def test_1_makes_a_deferred_constraint_that_stays_deferred_after_commit(sa_async_session):
    assert await backend_pid(sa_async_session) == PIDS[0]
    await sa_async_session.execute(text(MINE))
    await sa_async_session.commit()
    # The next unit of work starts with the test's constraint deferred, as a transaction would.
    await sa_async_session.execute(text("INSERT INTO notes VALUES (1, -7)"))
    await sa_async_session.execute(text("INSERT INTO users (id, email) VALUES (-7, 'late@x')"))
    await sa_async_session.commit()
    await sa_async_session.execute(text("INSERT INTO notes VALUES (2, -8)"))
    with pytest.raises(IntegrityError, match="Note's User"):
        await sa_async_session.commit()
    await sa_async_session.rollback()
    await orphan_is_deferred_then_refused(sa_async_session)

async def test_2_drops_the_template_constraint_and_commits(sa_async_session):
    assert await backend_pid(sa_async_session) == PIDS[0]
    assert (await sa_async_session.execute(text("SELECT to_regclass('notes')"))).scalar() is None
    await sa_async_session.execute(text("ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey"))
    await sa_async_session.commit()
    await sa_async_session.execute(text(ORPHAN))
    await sa_async_session.commit()

async def test_3_has_the_template_constraint_back_deferred(sa_async_session):
    assert await backend_pid(sa_async_session) == PIDS[0]
    await orphan_is_deferred_then_refused(sa_async_session)
    await orphan_is_deferred_then_refused(sa_async_session)
""",
    )
    user_project.runpytest("-p", "no:randomly", "-W", "error").assert_outcomes(passed=5)


def test_prepared_statements_of_any_name_are_deallocated_and_asyncpgs_own_are_kept(
    user_project: pytest.Pytester,
) -> None:
    write_module_loop_suite(
        user_project,
        """
OWN = "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql"
KEPT = []

async def test_1_prepares_statements_with_awkward_names(sa_async_session):
    for name in ('mine', '"Mixed Case"', '"semi; DROP colon"'):
        await sa_async_session.execute(text(f"PREPARE {name} AS SELECT 1"))
    await users(sa_async_session)
    KEPT.append((await sa_async_session.execute(text(OWN))).scalar())
    PIDS.append(await backend_pid(sa_async_session))

async def test_2_has_none_of_them_and_asyncpgs_own_still(sa_async_session):
    assert await backend_pid(sa_async_session) == PIDS[0]
    prepared = "SELECT count(*) FROM pg_prepared_statements WHERE from_sql"
    assert (await sa_async_session.execute(text(prepared))).scalar() == 0
    assert (await sa_async_session.execute(text(OWN))).scalar() >= KEPT[0] > 0

async def test_3_a_lock_alone_is_released_too(sa_async_session):
    await sa_async_session.execute(text("SELECT pg_advisory_lock(9)"))

async def test_4_starts_without_it(sa_async_session):
    assert await backend_pid(sa_async_session) == PIDS[0]
    locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    assert (await sa_async_session.execute(text(locks))).scalar() == 0
""",
    )
    user_project.runpytest("-p", "no:randomly", "-W", "error").assert_outcomes(passed=4)


def test_a_test_that_ends_the_kept_session_leaves_the_next_a_new_connection(
    user_project: pytest.Pytester,
) -> None:
    """Ended by the test itself, and by a ``pg`` test while the loop waits for its next test."""
    write_suite(
        user_project,
        """
MODULE = pytest.mark.asyncio(loop_scope="module")

@MODULE
async def test_1_ends_its_own_session(sa_async_session):
    PIDS.append(await backend_pid(sa_async_session))
    with pytest.raises(Exception):
        await sa_async_session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

@MODULE
async def test_2_has_a_new_connection(sa_async_session):
    PIDS.append(await backend_pid(sa_async_session))
    assert PIDS[1] != PIDS[0]
    assert await users(sa_async_session) == 0

def test_3_a_sync_test_ends_the_kept_session(pg):
    pg.execute("SELECT pg_terminate_backend(%s)", (PIDS[1],))

@MODULE
async def test_4_has_a_new_connection_again(sa_async_session):
    PIDS.append(await backend_pid(sa_async_session))
    assert PIDS[2] not in PIDS[:2]
    assert await users(sa_async_session) == 0
""",
    )
    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=4, warnings=1)


def test_the_kept_connection_is_no_outside_session_to_the_tests_after_it(
    user_project: pytest.Pytester,
) -> None:
    """A ``pg`` and an ``apg`` test after it see it connected, idle, and say nothing (warnings
    are errors here: an outside session would rebuild the database and warn). Their connections
    come first, so that the session count they read before it changes, and they look."""
    write_suite(
        user_project,
        """
def test_0_pg_connects_first(pg):
    pass

@pytest.mark.asyncio
async def test_0_apg_connects_first(apg):
    pass

@pytest.mark.asyncio(loop_scope="module")
async def test_1_keeps_a_connection(sa_async_session):
    await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('a@x')"))
    await sa_async_session.commit()
    PIDS.append(await backend_pid(sa_async_session))

def test_2_pg_sees_it_and_says_nothing(pg):
    connected = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
    assert pg.execute(connected, (PIDS[0],)).fetchone()[0] == 1
    pg.execute("INSERT INTO users (email) VALUES ('b@x')")
    pg.commit()

@pytest.mark.asyncio
async def test_3_apg_says_nothing_either(apg):
    await apg.execute("INSERT INTO users (email) VALUES ('c@x')")
    await apg.commit()

@pytest.mark.asyncio(loop_scope="module")
async def test_4_the_same_connection_sees_nothing(sa_async_session):
    assert await backend_pid(sa_async_session) == PIDS[0]
    assert await users(sa_async_session) == 0
""",
    )
    result = user_project.runpytest("-p", "no:randomly", "-W", "error::unmocked.UnmockedWarning")
    result.assert_outcomes(passed=6)


def test_loops_of_each_scope_in_one_module_each_keep_their_own(
    user_project: pytest.Pytester,
) -> None:
    """Function-scoped loops get a connection per test; the module's loop keeps its own, through
    the function-scoped tests between its tests, and every test sees only its own rows."""
    write_suite(
        user_project,
        """
MODULE_PIDS = []

async def writes_and_sees_only_its_own(session):
    assert await users(session) == 0
    await session.execute(text("INSERT INTO users (email) VALUES ('a@x')"))
    await session.commit()
    assert await users(session) == 1

@pytest.mark.parametrize("turn", range(3))
@pytest.mark.asyncio(loop_scope="module")
async def test_in_the_module_loop(sa_async_session, turn):
    await writes_and_sees_only_its_own(sa_async_session)
    MODULE_PIDS.append(await backend_pid(sa_async_session))
    assert len(set(MODULE_PIDS)) == 1

@pytest.mark.parametrize("turn", range(3))
@pytest.mark.asyncio
async def test_in_a_loop_of_its_own(sa_async_session, turn):
    await writes_and_sees_only_its_own(sa_async_session)
    PIDS.append(await backend_pid(sa_async_session))
    assert not set(PIDS) & set(MODULE_PIDS)
""",
    )
    for seed in (1, 2):
        result = user_project.runpytest("-p", "randomly", f"--randomly-seed={seed}", "-W", "error")
        result.assert_outcomes(passed=6)
