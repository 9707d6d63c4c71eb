"""``unmocked_django = off``: pytest-django sets Django's test databases up as without unmocked.

With it off, Django's ``test_<NAME>`` is created, migrated and dropped by pytest-django on the
server the project's settings name (here the machine's running PostgreSQL), unmocked registers
none of its Django fixtures and prints nothing. The ini key and ``UNMOCKED_DJANGO`` both turn it
off; any other value than ``auto`` or ``off`` stops the run with one paragraph.
"""

from __future__ import annotations

import secrets

import pytest
from psycopg.conninfo import conninfo_to_dict

from helpers import DJANGO_BASE_SETTINGS, RUNNING_SERVER_URL, query, server_answers, write_files

pytest.importorskip("pytest_django", reason="needs pytest-django")

SETTINGS = (
    DJANGO_BASE_SETTINGS
    + """
DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "{name}",
        "HOST": "{host}",
        "PORT": "{port}",
        "USER": "{user}",
        "PASSWORD": "{password}",
    }}
}}
"""
)

TESTS = """
import pytest
from django.contrib.auth.models import User
from django.db import connection

def database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        return cursor.fetchone()[0]

def test_rollback(db):
    User.objects.create(username="rolled-back")
    assert database() == "test_{name}"

@pytest.mark.django_db(transaction=True)
def test_transactional():
    User.objects.create(username="flushed")
    assert database() == "test_{name}"
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> str:
    """A Django project whose ``default`` is a database of its own name on the running server;
    returns that name."""
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    monkeypatch.delenv("UNMOCKED_DATABASE_URL", raising=False)
    monkeypatch.delenv("UNMOCKED_DJANGO", raising=False)
    name = f"optout_{secrets.token_hex(4)}"
    params = conninfo_to_dict(RUNNING_SERVER_URL)
    location = {key: params.get(key, "") for key in ("host", "port", "user", "password")}
    write_files(
        pytester.path,
        {
            "proj/__init__.py": "",
            "proj/settings.py": SETTINGS.format(name=name, **location),
            "test_plain.py": TESTS.format(name=name),
        },
    )
    return name


def write_ini(pytester: pytest.Pytester, extra: str = "") -> None:
    pytester.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = proj.settings\npythonpath = .\n"
        f"asyncio_default_fixture_loop_scope = function\n{extra}"
    )


@pytest.mark.parametrize("how", ["ini", "environment"])
def test_with_the_takeover_off_pytest_django_makes_and_drops_its_own_test_database(
    pytester: pytest.Pytester, project: str, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "ini":
        write_ini(pytester, "unmocked_django = off\n")
    else:
        write_ini(pytester)
        monkeypatch.setenv("UNMOCKED_DJANGO", "off")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--trace-config")
    result.assert_outcomes(passed=2)
    output = result.stdout.str()
    assert "unmocked-django" not in output
    assert not [line for line in output.splitlines() if line.startswith("unmocked:")], output
    left = query(
        RUNNING_SERVER_URL, f"SELECT count(*) FROM pg_database WHERE datname LIKE '%{project}'"
    )
    assert left == 0


def test_an_unknown_takeover_value_is_one_paragraph(
    pytester: pytest.Pytester, project: str
) -> None:
    write_ini(pytester, "unmocked_django = maybe\n")
    result = pytester.runpytest_subprocess()
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert (
        "unmocked_django = 'maybe': use auto (unmocked serves pytest-django's databases) or off "
        "(pytest-django sets them up as without unmocked)." in output
    )
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
