"""The ``queries`` fixture: what a test's code sends, on every path, and the checks over it.

Each check is run where it must fire and where it must stay silent, in a user's suite run by
pytester on a server of each kind: an N+1 loop against ``selectinload``, a lookup no index serves
against one a composite index's leading column serves, a budget kept and one broken. The failures
must name the statements and the user's line that sent them, not a frame of the ORM."""

from __future__ import annotations

import pytest

from helpers import CHECKS_MODELS, CHECKS_SCHEMA, EACH_KIND_OF_SERVER, django_project

PROVIDERS = EACH_KIND_OF_SERVER

SUITE = """
import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import selectinload

from models import Order, User, seed

@pytest.fixture
def sa_async_driver():
    return "psycopg"

def test_sqlalchemys_own_set_up_is_never_counted(sa_session, queries):
    sa_session.execute(text("SELECT 1"))  # the first connect: the dialect reads the server
    assert [s.sql for s in queries.statements] == ["SELECT 1"]

@pytest.mark.asyncio
async def test_nor_in_its_asyncio_layer(sa_async_session, queries):
    await sa_async_session.execute(text("SELECT 2"))
    assert [s.sql for s in queries.statements] == ["SELECT 2"]
    assert queries.statements[0].line.function == "test_nor_in_its_asyncio_layer"

def test_records_what_pg_sends_and_not_unmockeds_own(pg, queries):
    pg.execute("INSERT INTO users (email) VALUES (%s)", ("a@example.com",))
    pg.commit()  # a savepoint of unmocked's: never counted
    with pg.transaction():
        pg.execute("SELECT count(*) FROM users")
    assert [s.sql for s in queries.statements] == [
        "INSERT INTO users (email) VALUES (%s)", "SELECT count(*) FROM users"
    ]
    assert queries.statements[0].params == ("a@example.com",)
    assert queries.statements[0].line.path.endswith("test_checks.py")
    queries.clear()
    assert queries.count == 0

def test_records_pg_url_connections_the_code_opens(pg_url, queries):
    with psycopg.connect(pg_url) as conn:
        conn.execute("SELECT 1")
        conn.cursor().executemany("INSERT INTO users (email) VALUES (%s)", [("x",), ("y",)])
    assert [(s.sql, s.many) for s in queries.statements] == [
        ("SELECT 1", None), ("INSERT INTO users (email) VALUES (%s)", 2)
    ]

@pytest.mark.asyncio
async def test_records_the_async_connection(apg, queries):
    await apg.execute("SELECT 1")
    async with apg.cursor() as cursor:
        await cursor.execute("SELECT 2")
    assert [s.sql for s in queries.statements] == ["SELECT 1", "SELECT 2"]

def test_a_budget_kept_passes(sa_session, queries):
    seed(sa_session)
    with queries.at_most(1):
        sa_session.execute(select(User)).scalars().all()
    with queries.exactly(1):
        sa_session.execute(select(User)).scalars().all()

def test_a_budget_broken_fails(sa_session, queries):
    seed(sa_session)
    sa_session.expire_all()
    with queries.at_most(2):
        for user in sa_session.execute(select(User)).scalars():
            user.orders  # the line that sends them

def test_selectinload_is_not_n_plus_one(sa_session, queries):
    seed(sa_session, users=6)
    sa_session.expire_all()
    with queries.no_n_plus_one(threshold=3):
        users = sa_session.execute(select(User).options(selectinload(User.orders))).scalars()
        assert sum(len(user.orders) for user in users) == 12

def test_a_lazy_load_per_row_is(sa_session, queries):
    seed(sa_session, users=6)
    sa_session.expire_all()
    with queries.no_n_plus_one(threshold=3):
        for user in sa_session.execute(select(User)).scalars():
            len(user.orders)  # the line that sends them

def test_leading_column_is_indexed(pg, queries):
    with queries.indexed():
        pg.execute("SELECT * FROM orders WHERE user_id = %s", (1,)).fetchall()
        pg.execute("SELECT * FROM users WHERE email = %s", ("a",)).fetchall()
        pg.execute("SELECT * FROM users").fetchall()  # nothing to serve: read in full, on purpose
    plan = queries.explain("SELECT * FROM orders WHERE user_id = %s", (1,))
    assert plan.unindexed == () and "orders_by_user" in str(plan)

def test_a_lookup_no_index_serves_is_not(pg, queries):
    with queries.indexed(tables=["orders"]):
        pg.execute("SELECT * FROM statuses WHERE name = %s", ("new",)).fetchall()  # not listed
        pg.execute("SELECT * FROM orders WHERE amount > %s", (3,)).fetchall()

def test_a_join_with_no_index_on_its_key_is_not(pg, queries):
    plan = queries.explain(
        "SELECT * FROM orders JOIN notes ON notes.order_id = orders.id WHERE orders.user_id = %s",
        (1,),
        database=pg.info.dbname,
    )
    assert plan.unindexed == ("notes",), str(plan)
    assert plan.json[0]["Plan"]
"""


@pytest.fixture
def checks_project(user_project: pytest.Pytester) -> pytest.Pytester:
    pytest.importorskip("sqlalchemy")
    (user_project.path / "migrations" / "002_checks.sql").write_text(CHECKS_SCHEMA)
    user_project.makepyfile(models=CHECKS_MODELS, test_checks=SUITE)
    return user_project


def test_each_check_fires_where_it_should_and_only_there(checks_project: pytest.Pytester) -> None:
    result = checks_project.runpytest_subprocess("-p", "no:randomly")
    output = result.stdout.str()
    result.assert_outcomes(passed=9, failed=3)
    for failing in (
        "test_a_budget_broken_fails",
        "test_a_lazy_load_per_row_is",
        "test_a_lookup_no_index_serves_is_not",
    ):
        assert f"FAILED test_checks.py::{failing}" in output, output
    # The budget: the statements, numbered, each from the user's line, not SQLAlchemy's.
    assert "The block sent 5 statements, at most 2 allowed:" in output, output
    assert (
        "from test_checks.py:" in output and "(user.orders  # the line that sends them)" in output
    )
    # N+1: the shape, the count and the line.
    assert "N+1 queries: one statement ran 6 times (the threshold is 3), from test_checks.py:" in (
        output
    ), output
    assert "(len(user.orders)  # the line that sends them)" in output
    # The index: only the listed table, with why.
    assert "1 statement must read a whole table (of orders)" in output, output
    assert (
        "reads orders in full: Bitmap Index Scan using orders_by_user, whose leading column "
        in (output)
    ), output
    assert "statuses in full" not in output


def test_under_xdist_each_worker_records_its_own_tests(checks_project: pytest.Pytester) -> None:
    result = checks_project.runpytest_subprocess("-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=9, failed=3)


def test_django_orm_statements_are_recorded_with_the_users_line(
    provider_project: pytest.Pytester, provider: dict[str, str]
) -> None:
    pytest.importorskip("pytest_django")
    if provider["UNMOCKED_PROVIDER"] != "embedded":
        pytest.skip("the Django path is the same on every provider")
    django_project(provider_project)
    provider_project.makepyfile(
        """
        import pytest
        from django.contrib.auth.models import User

        def test_rollback(db, queries):
            User.objects.create(username="a")
            assert User.objects.count() == 1
            assert [s.sql.split()[0] for s in queries.statements] == ["INSERT", "SELECT"]

        @pytest.mark.django_db(transaction=True)
        def test_transactional(queries):
            with queries.at_most(0):
                User.objects.filter(username="b").exists()  # sent from here
        """
    )
    result = provider_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    assert (
        "from test_django_orm_statements_are_recorded_with_the_users_line.py:"
        in (result.stdout.str())
        or '(User.objects.filter(username="b").exists()  # sent from here)' in result.stdout.str()
    )
