"""The suite's checks from the ini file, without a test asking: N+1 and the index guard.

A whole suite guarded by two lines of configuration: each check must warn where it should, stay
silent where it should (a ``selectinload``, rows inserted one by one, a seq scan on a small table
nobody listed), fail under ``fail`` and under ``-W error::unmocked.UnmockedWarning`` as one
paragraph, and name the test, the statement and the user's line. ``-v`` names the heaviest tests,
also from xdist's workers.
"""

from __future__ import annotations

import pytest

from helpers import CHECKS_MODELS, CHECKS_SCHEMA, EACH_KIND_OF_SERVER, ONE_PROVIDER

PROVIDERS = EACH_KIND_OF_SERVER

SUITE = """
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from models import Order, User, seed

def test_lazy_loads(sa_session):
    seed(sa_session, users=6)
    sa_session.expire_all()
    for user in sa_session.execute(select(User)).scalars():
        len(user.orders)  # one per user

def test_selectinload(sa_session):
    seed(sa_session, users=6)
    sa_session.expire_all()
    users = sa_session.execute(select(User).options(selectinload(User.orders))).scalars()
    assert sum(len(user.orders) for user in users) == 12

def test_rows_inserted_and_settings_set_one_by_one(pg):
    for number in range(8):
        pg.execute("INSERT INTO users (email) VALUES (%s)", (f"{number}@example.com",))
        pg.execute("SELECT set_config('app.n', %s, true)", (str(number),))  # no rows loaded

def test_lookups(pg):
    pg.execute("SELECT * FROM statuses WHERE name = %s", ("new",)).fetchall()
    pg.execute("SELECT * FROM orders WHERE user_id = %s", (1,)).fetchall()

def test_unindexed_lookup(pg_url):
    import psycopg
    with psycopg.connect(pg_url) as conn:
        conn.execute("SELECT * FROM orders WHERE amount > %s", (3,)).fetchall()  # no index
"""


@pytest.fixture
def guarded_project(user_project: pytest.Pytester) -> pytest.Pytester:
    pytest.importorskip("sqlalchemy")
    (user_project.path / "migrations" / "002_checks.sql").write_text(CHECKS_SCHEMA)
    user_project.makepyfile(models=CHECKS_MODELS, test_guarded=SUITE)
    return user_project


def with_ini(project: pytest.Pytester, *lines: str) -> None:
    ini = project.path / "tox.ini"  # what pytester.makeini writes
    ini.write_text(ini.read_text().rstrip("\n") + "".join(f"\n{line}" for line in lines) + "\n")


def test_by_default_an_n_plus_one_warns_naming_the_test_the_statement_and_the_line(
    guarded_project: pytest.Pytester,
) -> None:
    result = guarded_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=5)
    output = result.stdout.str()
    warnings = output[output.index("warnings summary") :]
    assert warnings.count("UnmockedWarning: test_guarded.py::") == 1, output
    assert (
        "test_guarded.py:10: UnmockedWarning: test_guarded.py::test_lazy_loads: N+1 queries: one "
        "statement ran 6 times (the threshold is 5), from test_guarded.py:10 " in warnings
    ), output
    assert "FROM orders WHERE ?::INTEGER = orders.user_id" in warnings
    assert "(unmocked_n_plus_one = warn)" in warnings


def test_fail_makes_it_the_tests_failure_and_off_silences_it(
    guarded_project: pytest.Pytester,
) -> None:
    with_ini(guarded_project, "unmocked_n_plus_one = fail", "unmocked_n_plus_one_threshold = 7")
    quiet = guarded_project.runpytest_subprocess("-p", "no:randomly")
    quiet.assert_outcomes(passed=5)  # 6 lazy loads, under a threshold of 7
    failed = guarded_project.runpytest_subprocess(
        "-p",
        "no:randomly",
        "-o",
        "unmocked_n_plus_one_threshold=3",  # -o beats the ini
    )
    failed.assert_outcomes(passed=4, failed=1)
    output = failed.stdout.str()
    assert "FAILED test_guarded.py::test_lazy_loads" in output
    assert "the threshold is 3" in output and "(unmocked_n_plus_one = fail)" in output
    assert "checks.py" not in output, output  # one paragraph, no frames of unmocked's
    silent = guarded_project.runpytest_subprocess(
        "-p", "no:randomly", "-o", "unmocked_n_plus_one=off"
    )
    silent.assert_outcomes(passed=5)
    assert "UnmockedWarning" not in silent.stdout.str()


def test_warnings_made_errors_fail_the_test_as_one_paragraph(
    guarded_project: pytest.Pytester,
) -> None:
    result = guarded_project.runpytest_subprocess(
        "-p", "no:randomly", "-W", "error::unmocked.UnmockedWarning"
    )
    result.assert_outcomes(passed=4, failed=1)
    output = result.stdout.str()
    assert "INTERNALERROR" not in output and "checks.py" not in output, output
    assert "test_guarded.py::test_lazy_loads: N+1 queries: one statement ran 6 times" in output


def test_listed_tables_read_in_full_are_reported_and_small_unlisted_ones_are_not(
    guarded_project: pytest.Pytester,
) -> None:
    with_ini(guarded_project, "unmocked_n_plus_one = off", "unmocked_indexed_tables = orders")
    warned = guarded_project.runpytest_subprocess("-p", "no:randomly")
    warned.assert_outcomes(passed=5)
    output = warned.stdout.str()
    warnings = output[output.index("warnings summary") :]
    assert warnings.count("UnmockedWarning: test_guarded.py::") == 1, output
    assert (
        "test_guarded.py::test_unindexed_lookup: 1 statement must read a whole table (of orders)"
        in warnings
    ), output
    assert "test_guarded.py:30" in warnings and "reads orders in full" in warnings
    assert "statuses" not in warnings
    failed = guarded_project.runpytest_subprocess(
        "-p", "no:randomly", "-o", "unmocked_indexed=fail"
    )
    failed.assert_outcomes(passed=4, failed=1)
    assert "FAILED test_guarded.py::test_unindexed_lookup" in failed.stdout.str()


def test_verbose_names_the_heaviest_tests_also_from_xdist_workers(
    guarded_project: pytest.Pytester,
) -> None:
    pytest.importorskip("xdist")
    result = guarded_project.runpytest_subprocess("-p", "no:randomly", "-v", "-n", "2")
    result.assert_outcomes(passed=5)
    output = result.stdout.str()
    most = output[output.index("unmocked: the tests that sent the most statements:") :]
    rows = most.splitlines()[1:6]
    assert "test_guarded.py::test_rows_inserted_and_settings_set_one_by_one" in rows[0], most
    assert all("ms in the database" in row for row in rows), most
    assert "unmocked: the tests whose statements took the most database time:" in most


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("unmocked_n_plus_one", "loud", "Use one of: off, warn, fail."),
        ("unmocked_indexed", "off", "Use one of: warn, fail."),
        ("unmocked_n_plus_one_threshold", "1", "a whole number of 2 or more"),
    ],
)
def test_a_bad_value_is_a_clear_error(
    pytester: pytest.Pytester, setting: str, value: str, said: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("-o", f"{setting}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert said in result.stderr.str(), result.stderr.str()
    assert "Traceback" not in result.stderr.str()


MARKED = """
import pytest
from sqlalchemy import select

from models import User, seed

def lazy_loads(sa_session):
    seed(sa_session, users=6)
    sa_session.expire_all()
    for user in sa_session.execute(select(User)).scalars():
        len(user.orders)

@pytest.mark.unmocked_n_plus_one("off")
def test_allowed(sa_session):
    lazy_loads(sa_session)

@pytest.mark.unmocked_n_plus_one("fail", threshold=3)
def test_stricter(sa_session):
    lazy_loads(sa_session)

@pytest.mark.unmocked_n_plus_one("loud")
def test_misspelt(sa_session):
    pass

def test_rows_locked_one_call_at_a_time(pg):
    for _ in range(8):
        pg.execute("SELECT id FROM users WHERE id = ANY(%s) ORDER BY id FOR UPDATE", ([1, 2],))
"""


@ONE_PROVIDER
def test_a_marker_sets_one_tests_check_and_locking_reads_are_not_n_plus_one(
    guarded_project: pytest.Pytester,
) -> None:
    guarded_project.makepyfile(test_marked=MARKED)
    result = guarded_project.runpytest_subprocess(
        "-p", "no:randomly", "test_marked.py", "--strict-markers"
    )
    result.assert_outcomes(passed=2, failed=2)
    output = result.stdout.str()
    assert "FAILED test_marked.py::test_stricter" in output
    assert "the threshold is 3" in output and "(unmocked_n_plus_one = fail)" in output
    assert (
        "@pytest.mark.unmocked_n_plus_one: unmocked_n_plus_one = 'loud' is not a mode unmocked "
        "knows. Use one of: off, warn, fail." in output
    ), output
    assert "During handling" not in output
    assert "UnmockedWarning" not in output, output
