"""The ``queries`` fixture on asyncpg and psycopg2: what code sends through them is recorded once,
with the user's line, and what they send on their own is not.

Connections the code under test opens itself to ``pg_url``, SQLAlchemy's engines on both drivers
(whose first connect reads the server: never counted) and Django on psycopg2, in a user's suite run
by pytester on a server of each kind. The checks fire on them as on psycopg 3. A suite where neither
driver can be imported still loads the plugin and records."""

from __future__ import annotations

import pytest

from helpers import CHECKS_MODELS, CHECKS_SCHEMA, EACH_KIND_OF_SERVER, ONE_PROVIDER, django_project

PROVIDERS = EACH_KIND_OF_SERVER

SUITE = """
import io

import asyncpg
import psycopg2
import pytest
from psycopg2.extras import RealDictCursor
from sqlalchemy import create_engine, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from models import User, seed
from unmocked.checks import QueryCheckFailed
from unmocked.urls import database_of, with_driver

INSERT = "INSERT INTO users (email) VALUES (%s)"
SET_UP = ("version()", "standard_conforming_strings", "current_schema", ";")


def sent(queries):
    return [(s.sql, s.params, s.many) for s in queries.statements]


def test_psycopg2_statements_are_recorded_with_the_users_line(pg_url, queries):
    conn = psycopg2.connect(pg_url)
    with conn, conn.cursor() as cursor:  # psycopg2's BEGIN and COMMIT: not counted
        cursor.execute(INSERT, ("a@example.com",))
        cursor.executemany(INSERT, iter([("b@example.com",), ("c@example.com",)]))
        cursor.callproc("abs", (-3,))
        cursor.copy_expert("COPY users (email) TO STDOUT", io.StringIO())
    conn.close()
    assert sent(queries) == [
        (INSERT, ("a@example.com",), None),
        (INSERT, [("b@example.com",), ("c@example.com",)], 2),
        ("SELECT * FROM abs(%s)", (-3,), None),
        ("COPY users (email) TO STDOUT", None, None),
    ]
    assert queries.statements[0].line.text == 'cursor.execute(INSERT, ("a@example.com",))'
    assert {s.database for s in queries.statements} == {database_of(pg_url)}


def test_psycopg2s_cursor_factories_still_make_their_rows(pg_url, queries):
    conn = psycopg2.connect(pg_url, cursor_factory=RealDictCursor)
    with conn, conn.cursor() as cursor:
        cursor.execute("SELECT 1 AS one")
        assert cursor.fetchall() == [{"one": 1}]
    with conn, conn.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor) as cursor:
        cursor.execute("SELECT 2 AS two")
        assert cursor.fetchone().two == 2
    conn.close()
    assert [s.sql for s in queries.statements] == ["SELECT 1 AS one", "SELECT 2 AS two"]


def test_sqlalchemys_psycopg2_engine_records_once_and_never_its_set_up(pg_url, queries):
    engine = create_engine(with_driver(pg_url, "psycopg2"))
    with Session(engine) as session:
        seed(session, users=1)
        session.commit()
    engine.dispose()
    assert [s.sql.split()[0] for s in queries.statements] == ["INSERT", "INSERT"]
    assert not [s for s in queries.statements if any(word in s.sql for word in SET_UP)]


@pytest.mark.asyncio
async def test_asyncpg_statements_are_counted_once_each(pg_url, queries):
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("INSERT INTO users (email) VALUES ($1)", "a@example.com")
        assert await conn.fetchval("SELECT count(*) FROM users") == 1
        await conn.fetchrow("SELECT id FROM users WHERE email = $1", "a@example.com")
        await conn.fetch("SELECT id FROM users")
        statement = await conn.prepare("SELECT email FROM users WHERE id = $1")  # not run
        await statement.fetch(1)
        await statement.fetchrow(2)
        async with conn.transaction():  # asyncpg's BEGIN and COMMIT: not counted
            await conn.executemany("INSERT INTO users (email) VALUES ($1)", [("b",), ("c",)])
        await conn.copy_records_to_table("users", records=[("d",)], columns=["email"])
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=1)
    await pool.fetchval("SELECT 5")  # and the pool's reset on release: not counted
    await pool.close()
    assert sent(queries) == [
        ("INSERT INTO users (email) VALUES ($1)", ("a@example.com",), None),
        ("SELECT count(*) FROM users", None, None),
        ("SELECT id FROM users WHERE email = $1", ("a@example.com",), None),
        ("SELECT id FROM users", None, None),
        ("SELECT email FROM users WHERE id = $1", (1,), None),
        ("SELECT email FROM users WHERE id = $1", (2,), None),
        ("INSERT INTO users (email) VALUES ($1)", [("b",), ("c",)], 2),
        ("COPY users (email) FROM STDIN", None, None),
        ("SELECT 5", None, None),
    ]
    assert queries.statements[0].line.function == "test_asyncpg_statements_are_counted_once_each"


@pytest.mark.asyncio
async def test_sqlalchemys_asyncpg_engine_records_once_and_never_its_set_up(pg_url, queries):
    engine = create_async_engine(with_driver(pg_url, "asyncpg"), pool_pre_ping=True)
    async with engine.connect() as conn:  # the first connect: the dialect reads the server
        await conn.execute(text("SELECT 1"))
    async with engine.connect() as conn:  # pinged as it leaves the pool
        await conn.execute(select(User).where(User.id == 1))
    await engine.dispose()
    assert [s.sql for s in queries.statements] == [
        "SELECT 1",
        "SELECT users.id, users.email \\nFROM users \\nWHERE users.id = $1::INTEGER",
    ]
    assert queries.statements[1].params == (1,)


@pytest.mark.asyncio
async def test_sa_async_session_on_asyncpg_records_the_orm_statements(sa_async_session, queries):
    # The savepoints the session joins the test's transaction with, and its commit's check of
    # deferred constraints, are unmocked's: in production its BEGIN and COMMIT, never counted.
    sa_async_session.add(User(email="a@example.com"))
    await sa_async_session.flush()
    await sa_async_session.execute(select(User).where(User.email == "a@example.com"))
    async with sa_async_session.begin_nested():  # the test's own savepoint: counted
        await sa_async_session.execute(text("SELECT 3"))
    await sa_async_session.commit()
    await sa_async_session.rollback()
    assert [" ".join(s.sql.split()[:2]) for s in queries.statements] == [
        "INSERT INTO",
        "SELECT users.id,",
        "SAVEPOINT sa_savepoint_2",
        "SELECT 3",
        "RELEASE SAVEPOINT",
    ]


@pytest.mark.asyncio
async def test_a_fetchrow_per_row_on_asyncpg_is_n_plus_one(pg_url, queries):
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.executemany("INSERT INTO users (email) VALUES ($1)", [("a",), ("b",), ("c",)])
        with pytest.raises(QueryCheckFailed) as failed, queries.no_n_plus_one():
            for user in await conn.fetch("SELECT id FROM users"):
                await conn.fetchrow("SELECT * FROM orders WHERE user_id = $1", user["id"])  # here
    finally:
        await conn.close()
    assert "N+1 queries: one statement ran 3 times (the threshold is 3), from " in str(failed.value)
    assert "# here)" in str(failed.value)


@pytest.mark.asyncio
async def test_indexed_explains_asyncpg_statements_with_their_parameters(pg_url, queries):
    conn = await asyncpg.connect(pg_url)
    try:
        with queries.indexed(tables=["orders"]):
            await conn.fetch("SELECT * FROM orders WHERE user_id = $1", 1)
        with pytest.raises(QueryCheckFailed, match="reads orders in full"), queries.indexed():
            await conn.fetch("SELECT * FROM orders WHERE amount > $1", 3)
    finally:
        await conn.close()
"""


@pytest.fixture
def drivers_project(user_project: pytest.Pytester) -> pytest.Pytester:
    for driver in ("asyncpg", "psycopg2", "sqlalchemy.ext.asyncio", "pytest_asyncio"):
        pytest.importorskip(driver)
    (user_project.path / "migrations" / "002_checks.sql").write_text(CHECKS_SCHEMA)
    user_project.makepyfile(models=CHECKS_MODELS, test_drivers=SUITE)
    return user_project


def test_asyncpg_and_psycopg2_statements_are_recorded_once_with_the_users_line(
    drivers_project: pytest.Pytester,
) -> None:
    result = drivers_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=SUITE.count("\ndef test_") + SUITE.count("\nasync def test_"))


@ONE_PROVIDER  # the Django path is the same on every provider
def test_django_on_psycopg2_is_recorded_with_the_users_line(
    provider_project: pytest.Pytester,
) -> None:
    pytest.importorskip("pytest_django")
    pytest.importorskip("psycopg2")
    django_project(
        provider_project,
        settings_first="from unmocked.integrations.django import use_psycopg2\nuse_psycopg2()\n",
    )
    provider_project.makepyfile(
        """
        import pytest
        from django.contrib.auth.models import User
        from django.db import connection

        def test_an_earlier_test_opens_djangos_connection(db):
            assert User.objects.count() == 0

        def test_orm_statements(db, queries):
            assert type(connection.connection).__module__.startswith("psycopg2")
            User.objects.create(username="a")
            assert User.objects.filter(username="a").exists()  # sent from here
            assert [s.sql.split()[0] for s in queries.statements] == ["INSERT", "SELECT"]
            assert queries.statements[1].line.text.endswith("# sent from here")

        @pytest.mark.django_db(transaction=True)
        def test_transactional(queries):
            User.objects.create(username="b")
            assert [s.sql.split()[0] for s in queries.statements] == ["INSERT"]
        """
    )
    result = provider_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=3)


@ONE_PROVIDER  # importing drivers is the same on every provider
def test_the_plugin_records_where_neither_driver_can_be_imported(
    provider_project: pytest.Pytester,
) -> None:
    provider_project.makeconftest(
        """
        import sys

        sys.modules["psycopg2"] = sys.modules["asyncpg"] = None  # import fails
        """
    )
    provider_project.makepyfile(
        """
        import pytest

        def test_records(pg, queries):
            pg.execute("SELECT 1")
            assert [s.sql for s in queries.statements] == ["SELECT 1"]
            with pytest.raises(ImportError):
                import psycopg2
        """
    )
    result = provider_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
