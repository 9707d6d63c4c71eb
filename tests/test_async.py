"""The async fixtures (``apg``, ``sa_async_session``) keep the guarantee of ``pg`` and
``sa_session``: every test's effects are invisible to every other test, while async code under test
keeps production's commit, rollback and error semantics. Each suite runs as a user would run it, on
a server of each kind (embedded and by URL), under pytest-asyncio's strict mode and under anyio's
plugin, and with both SQLAlchemy async drivers (asyncpg and psycopg)."""

from __future__ import annotations

import pytest

from helpers import EACH_KIND_OF_SERVER

# Imported once here, not in each in-process pytester run: pytester drops the modules a run
# imported, and a second import of asyncpg's Python half over its already loaded C half crashes.
pytest.importorskip("sqlalchemy.dialects.postgresql.asyncpg")
pytest.importorskip("asyncpg")

PROVIDERS = EACH_KIND_OF_SERVER

BOTH_DRIVERS = """
import pytest

@pytest.fixture(params=["asyncpg", "psycopg"])
def sa_async_driver(request):
    return request.param
"""

LEAKY_SUITE = """
import pytest
from sqlalchemy import text

COUNT = "SELECT count(*) FROM users"

@pytest.mark.parametrize("attempt", range(3))
@pytest.mark.asyncio
async def test_apg_commits(apg, attempt):
    await apg.execute("INSERT INTO users (email) VALUES ('leak@example.com')")
    await apg.commit()
    async with apg.transaction():
        await apg.execute("INSERT INTO users (email) VALUES ('second@example.com')")
    assert (await (await apg.execute(COUNT)).fetchone())[0] == 2

@pytest.mark.parametrize("attempt", range(3))
@pytest.mark.anyio
async def test_apg_commits_under_anyio(apg, attempt):
    await apg.execute("INSERT INTO users (email) VALUES ('leak@example.com')")
    await apg.commit()
    assert (await (await apg.execute(COUNT)).fetchone())[0] == 1

@pytest.mark.parametrize("attempt", range(3))
@pytest.mark.asyncio
async def test_session_commits(sa_async_session, attempt):
    await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('leak@example.com')"))
    await sa_async_session.commit()
    assert (await sa_async_session.execute(text(COUNT))).scalar() == 1

@pytest.mark.parametrize("attempt", range(3))
@pytest.mark.anyio
async def test_session_commits_under_anyio(sa_async_session, attempt):
    await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('leak@example.com')"))
    await sa_async_session.commit()
    assert (await sa_async_session.execute(text(COUNT))).scalar() == 1

@pytest.mark.asyncio(loop_scope="module")
async def test_session_commits_in_a_module_scoped_loop(sa_async_session):
    await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('leak@example.com')"))
    await sa_async_session.commit()
    assert (await sa_async_session.execute(text(COUNT))).scalar() == 1

@pytest.mark.parametrize("attempt", range(3))
def test_sync_test_sees_no_rows_of_async_tests(pg, attempt):
    assert pg.execute(COUNT).fetchone()[0] == 0
"""

# 6 apg + 2 drivers x 7 session tests + 3 sync tests, of which 3 apg and 2 x 3 session under anyio
LEAKY_SUITE_TESTS = 6 + 2 * 7 + 3
ANYIO_TESTS = 3 + 2 * 3


@pytest.mark.parametrize("seed", [1, 2])
def test_commit_by_async_code_under_test_is_invisible_to_the_next_test(
    user_project: pytest.Pytester, seed: int
) -> None:
    user_project.makeconftest(BOTH_DRIVERS)
    user_project.makepyfile(test_leaks=LEAKY_SUITE)
    result = user_project.runpytest("-p", "randomly", f"--randomly-seed={seed}", "-W", "error")
    result.assert_outcomes(passed=LEAKY_SUITE_TESTS)


def test_async_fixtures_work_in_pytest_asyncio_auto_mode(user_project: pytest.Pytester) -> None:
    """Auto mode runs every async fixture itself, anyio tests' too: so no anyio tests here."""
    user_project.makeconftest(BOTH_DRIVERS)
    user_project.makepyfile(test_leaks=LEAKY_SUITE)
    result = user_project.runpytest("-o", "asyncio_mode=auto", "-k", "not anyio", "-p", "randomly")
    result.assert_outcomes(passed=LEAKY_SUITE_TESTS - ANYIO_TESTS)


def test_async_tests_are_isolated_across_xdist_workers(user_project: pytest.Pytester) -> None:
    user_project.makeconftest(BOTH_DRIVERS)
    user_project.makepyfile(test_leaks=LEAKY_SUITE)
    result = user_project.runpytest("-n", "2", "-p", "randomly")
    result.assert_outcomes(passed=LEAKY_SUITE_TESTS)


def test_one_async_connection_serves_every_test_event_loop(user_project: pytest.Pytester) -> None:
    """apg and its engine serve test after test, each in a new loop, also after concurrent use."""
    user_project.makeconftest(BOTH_DRIVERS)
    user_project.makepyfile(
        """
        import asyncio
        import pytest
        from sqlalchemy import text

        @pytest.mark.parametrize("attempt", range(3))
        @pytest.mark.asyncio
        async def test_concurrent_queries_on_apg(apg, attempt):
            queries = [apg.execute("SELECT pg_sleep(0.01)") for _ in range(3)]
            assert len(await asyncio.gather(*queries)) == 3

        @pytest.mark.parametrize("attempt", range(3))
        @pytest.mark.asyncio
        async def test_concurrent_queries_on_the_session_connection(sa_async_session, attempt):
            connection = await sa_async_session.connection()
            queries = [connection.execute(text("SELECT pg_sleep(0.01)")) for _ in range(3)]
            assert len(await asyncio.gather(*queries)) == 3
        """
    )
    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=9)


def test_apg_and_a_psycopg_session_share_one_transaction(user_project: pytest.Pytester) -> None:
    user_project.makeconftest(
        """
        import pytest

        @pytest.fixture
        def sa_async_driver():
            return "psycopg"
        """
    )
    user_project.makepyfile(
        """
        import pytest
        from sqlalchemy import text

        @pytest.mark.asyncio
        async def test_both_see_each_other(apg, sa_async_session):
            await apg.execute("INSERT INTO users (email) VALUES ('raw@example.com')")
            count = await sa_async_session.execute(text("SELECT count(*) FROM users"))
            assert count.scalar() == 1
            await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('orm@x')"))
            await sa_async_session.flush()
            assert (await (await apg.execute("SELECT count(*) FROM users")).fetchone())[0] == 2
        """
    )
    user_project.runpytest().assert_outcomes(passed=1)


def test_async_commit_checks_deferred_constraints_as_a_real_commit_would(
    user_project: pytest.Pytester,
) -> None:
    user_project.makeconftest(BOTH_DRIVERS)
    user_project.makepyfile(
        """
        import psycopg, pytest
        from sqlalchemy import text
        from sqlalchemy.exc import IntegrityError

        ORPHAN = "INSERT INTO orders (user_id, amount) VALUES (-1, 1)"
        LATE_ORDER = "INSERT INTO orders (user_id, amount) VALUES (-2, 1)"

        @pytest.mark.asyncio
        async def test_apg_commit(apg):
            await apg.execute(ORPHAN)  # deferred: no error yet
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                await apg.commit()
            assert (await (await apg.execute("SELECT count(*) FROM orders")).fetchone())[0] == 0
            # The next unit of work starts deferred again, as a new transaction would.
            await apg.execute("INSERT INTO orders (user_id, amount) VALUES (-2, 1)")
            await apg.execute("INSERT INTO users (id, email) VALUES (-2, 'late@example.com')")
            await apg.commit()

        @pytest.mark.asyncio
        async def test_apg_transaction_block_commits_on_exit(apg):
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                async with apg.transaction():
                    await apg.execute(ORPHAN)

        @pytest.mark.asyncio
        async def test_session_commit(sa_async_session):
            await sa_async_session.execute(text(ORPHAN))
            with pytest.raises(IntegrityError):
                await sa_async_session.commit()
            await sa_async_session.rollback()
            count = await sa_async_session.execute(text("SELECT count(*) FROM orders"))
            assert count.scalar() == 0
            await sa_async_session.execute(text(LATE_ORDER))
            await sa_async_session.execute(text("INSERT INTO users (id, email) VALUES (-2, 'x')"))
            await sa_async_session.commit()

        @pytest.mark.asyncio
        async def test_nested_session_transaction_does_not_check_them(sa_async_session):
            async with sa_async_session.begin_nested():
                await sa_async_session.execute(text(ORPHAN))  # a savepoint release: no check
            with pytest.raises(IntegrityError):
                await sa_async_session.commit()
        """
    )
    user_project.runpytest().assert_outcomes(passed=2 + 2 * 2)


def test_error_inside_async_transaction_leaves_the_connection_usable(
    user_project: pytest.Pytester,
) -> None:
    user_project.makeconftest(BOTH_DRIVERS)
    user_project.makepyfile(
        """
        import psycopg, pytest
        from sqlalchemy import text
        from sqlalchemy.exc import IntegrityError

        @pytest.mark.asyncio
        async def test_unique_violation_inside_a_block(apg):
            await apg.execute("INSERT INTO users (email) VALUES ('a@example.com')")
            with pytest.raises(psycopg.errors.UniqueViolation):
                async with apg.transaction():
                    await apg.execute("INSERT INTO users (email) VALUES ('a@example.com')")
            assert (await (await apg.execute("SELECT count(*) FROM users")).fetchone())[0] == 1

        @pytest.mark.asyncio
        async def test_rollback_undoes_only_the_unit_of_work(apg):
            await apg.execute("INSERT INTO users (email) VALUES ('kept@example.com')")
            await apg.commit()
            with pytest.raises(psycopg.errors.UndefinedTable):
                await apg.execute("SELECT * FROM no_such_table")
            await apg.rollback()
            rows = await (await apg.execute("SELECT email FROM users")).fetchall()
            assert rows == [("kept@example.com",)]

        @pytest.mark.asyncio
        async def test_session_rollback_after_unique_violation(sa_async_session):
            insert = text("INSERT INTO users (email) VALUES ('a@example.com')")
            await sa_async_session.execute(insert)
            await sa_async_session.commit()
            with pytest.raises(IntegrityError):
                await sa_async_session.execute(insert)
            await sa_async_session.rollback()
            count = await sa_async_session.execute(text("SELECT count(*) FROM users"))
            assert count.scalar() == 1
        """
    )
    user_project.runpytest().assert_outcomes(passed=2 + 2)


def test_raw_commit_in_an_async_test_is_still_isolated_and_warned_about(
    user_project: pytest.Pytester,
) -> None:
    user_project.makeconftest(BOTH_DRIVERS)
    user_project.makepyfile(
        """
        import pytest
        from sqlalchemy import text

        @pytest.mark.asyncio
        async def test_a_raw_commit_on_apg(apg):
            await apg.execute("INSERT INTO users (email) VALUES ('raw@example.com')")
            await apg.execute("COMMIT")

        @pytest.mark.asyncio
        async def test_a_raw_commit_then_a_new_transaction_on_apg(apg):
            await apg.execute("INSERT INTO users (email) VALUES ('raw2@example.com')")
            await apg.execute("COMMIT")
            await apg.execute("SELECT 1")  # psycopg begins a transaction of its own

        def test_a_raw_commit_then_a_new_transaction_then_close_on_pg(pg):
            pg.execute("INSERT INTO users (email) VALUES ('raw3@example.com')")
            pg.execute("COMMIT")
            pg.execute("SELECT 1")
            pg.rollback()
            pg.close()

        @pytest.mark.asyncio
        async def test_b_raw_commit_in_a_session(sa_async_session):
            await sa_async_session.execute(text("INSERT INTO users (email) VALUES ('s@x')"))
            await sa_async_session.execute(text("COMMIT"))

        def test_c_sees_nothing(pg):
            assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        """
    )
    result = user_project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=6, warnings=5)
    result.stdout.fnmatch_lines(["*ended unmocked's outer transaction*"])


def test_async_session_state_does_not_leak_between_tests(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        """
        import pytest

        LOCKS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s"

        @pytest.mark.asyncio
        async def test_a_leaves_session_state(apg):
            await apg.execute("PREPARE q AS SELECT 1")
            await apg.execute("SELECT pg_advisory_lock(1)")
            await apg.commit()

        @pytest.mark.asyncio
        async def test_b_starts_clean(apg):
            prepared = await apg.execute("SELECT count(*) FROM pg_prepared_statements")
            assert (await prepared.fetchone())[0] == 0
            locks = await apg.execute(LOCKS, (apg.info.backend_pid,))
            assert (await locks.fetchone())[0] == 0
        """
    )
    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


def test_asking_for_two_connections_in_one_test_fails_with_the_reason(
    user_project: pytest.Pytester,
) -> None:
    """pg and apg are two transactions: neither sees the other's writes; one waits on the other."""
    user_project.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_both(pg, apg):
            pass

        @pytest.mark.asyncio
        async def test_sync_session_and_asyncpg_session(sa_session, sa_async_session):
            pass
        """
    )
    result = user_project.runpytest()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*asks for pg (or sa_session, sa_engine) and apg: two conn*"])
    result.stdout.fnmatch_lines(["*asks for pg (or sa_session, sa_engine) and sa_async_session*"])


def test_sqlmodel_async_session_has_exec_and_the_same_guarantee(
    user_project: pytest.Pytester,
) -> None:
    pytest.importorskip("sqlmodel")
    user_project.makeconftest(BOTH_DRIVERS)
    user_project.makepyfile(
        """
        import pytest
        from sqlmodel import Field, SQLModel, func, select

        class User(SQLModel, table=True):
            __tablename__ = "users"
            id: int | None = Field(default=None, primary_key=True)
            email: str

        @pytest.mark.parametrize("attempt", range(2))
        @pytest.mark.asyncio
        async def test_add_commit_and_exec(sqlmodel_async_session, attempt):
            sqlmodel_async_session.add(User(email="a@example.com"))
            await sqlmodel_async_session.commit()
            users = (await sqlmodel_async_session.exec(select(User))).all()
            assert [user.email for user in users] == ["a@example.com"]
        """
    )
    # In a process of its own: SQLModel's one global MetaData would refuse a second "users"
    # table from an earlier in-process run.
    user_project.runpytest_subprocess("-p", "randomly").assert_outcomes(passed=2 * 2)
