"""A failed test's report never shows the server's password: not in the arguments pytest prints,
not in ``-l`` locals, not in an assertion's diff, not from an xdist worker.

The password is one that needs URL-escaping (``p@ss:w/rd%``), so both its raw and its encoded
forms are looked for. On the running server (trust authentication, which never checks it) a role
of our own carries it; on the servers unmocked starts, whatever secret their URL carries is read
back from the run itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import psycopg
import pytest
from psycopg import sql

from helpers import EACH_KIND_OF_SERVER, RUNNING_SERVER_URL, server_answers
from unmocked import ownership
from unmocked.servers import Server
from unmocked.session import UnmockedSession
from unmocked.settings import Settings

PROVIDERS = EACH_KIND_OF_SERVER

# One role per process: under ``-n 2`` each worker's module fixture makes and drops its own.
ROLE = f"unmocked_pw_test_{os.getpid()}"
PASSWORD = "p@ss:w/rd%"

# Every value unmocked hands a test, each in a test that fails after asking for it.
FAILING_SUITE = """
import os
import pathlib
from urllib.parse import urlsplit

import pytest

def test_fresh_database_url(pg_url):
    assert pg_url == "postgresql://elsewhere/db"

def test_server(pg_server):
    pathlib.Path(os.environ["SERVER_URL_FILE"]).write_text(str(pg_server.url))
    assert pg_server.provider == "none of them"

def test_rollback_connection_and_sqlalchemy(pg, sa_engine, sa_session, unmocked_session):
    assert pg is None

def test_rollback_database_url(unmocked_session):
    url = unmocked_session.rollback_database_url()
    assert not url

def test_two_urls_compared(pg_server, pg_url):
    assert pg_url == pg_server.url

def with_another_password(url):
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:another@{host}").geturl()

def test_urls_differing_only_in_their_passwords(pg_server):
    assert pg_server.url == with_another_password(pg_server.url)

@pytest.mark.asyncio
async def test_async_connection(apg):
    server_url = apg.info.dsn
    raise RuntimeError("failed while holding apg")
"""
FAILED = 7


@pytest.fixture(scope="module")
def url_with_password() -> Iterator[str]:
    """An admin URL of the running server for a superuser role whose password needs escaping."""
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as conn:
        drop_role(conn)
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(PASSWORD)
            )
        )
    parts = urlsplit(RUNNING_SERVER_URL)
    yield f"postgresql://{ROLE}:{quote(PASSWORD, safe='')}@{parts.hostname}:{parts.port}/postgres"
    with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as conn:
        drop_role(conn)


def drop_role(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Drop the role and the databases it made (templates, databases kept for failed tests)."""
    owned = {
        name
        for (name,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datdba = "
            "(SELECT oid FROM pg_roles WHERE rolname = %s)",
            (ROLE,),
        )
    }
    for name, _owner in ownership.our_databases(conn):
        if name in owned:
            ownership.drop_database(conn, name)
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


def forms_of(password: str) -> set[str]:
    """The ways a password can appear in text: raw, percent-encoded, encoded but for slashes."""
    return {password, quote(password, safe=""), quote(password)} - {""}


@pytest.mark.parametrize(
    "args",
    [(), ("-l",), ("--tb=long",), ("-vv", "-l"), ("-n", "2")],
    ids=["plain", "locals", "long", "very-verbose", "xdist"],
)
def test_a_failed_tests_report_never_shows_the_servers_password(
    user_project: pytest.Pytester,
    provider: dict[str, str],
    url_with_password: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: tuple[str, ...],
) -> None:
    if "UNMOCKED_DATABASE_URL" in provider:
        monkeypatch.setenv("UNMOCKED_DATABASE_URL", url_with_password)
    server_url_file = tmp_path / "server_url"
    monkeypatch.setenv("SERVER_URL_FILE", str(server_url_file))
    # A schema of its own (named after the role, so another worker's role never clones from
    # it): the templates this role builds are dropped with it.
    (user_project.path / "migrations" / "002_secrets.sql").write_text(
        f"CREATE TABLE {ROLE} (id int);\n"
    )
    user_project.makepyfile(test_failing=FAILING_SUITE)

    result = user_project.runpytest_subprocess("-p", "no:randomly", *args)

    result.assert_outcomes(failed=FAILED)
    output = result.stdout.str() + result.stderr.str()
    password = unquote(urlsplit(server_url_file.read_text()).password or "")
    if "UNMOCKED_DATABASE_URL" in provider:
        assert password == PASSWORD
    for form in forms_of(password):
        assert form not in output
    assert "pg_url = 'postgresql://" in output or "pg_url     = 'postgresql://" in output
    if password:
        assert ":***@" in output
        assert "The URLs differ in their passwords, which unmocked does not print." in output


def test_the_server_the_settings_and_the_session_show_no_password_in_their_repr() -> None:
    url = f"postgresql://app:{quote(PASSWORD, safe='')}@db.example:5432/postgres"
    server = Server(url=url, version="18.1", major=18, provider="url")
    settings = Settings(database_url=url)
    session = UnmockedSession(settings, attach_to=server)

    before_use = repr(session)
    assert session.server is server
    shown = [
        repr(server),
        repr(server.url),
        repr(Server.from_fields(server.to_fields())),
        repr(server.to_fields()),
        repr(settings),
        repr(settings.database_url),
        before_use,
        repr(session),
    ]
    for text in shown:
        for form in forms_of(PASSWORD):
            assert form not in text
    assert "app:***@db.example" in repr(server) and "app:***@db.example" in repr(settings)
    assert str(server.url) == url == server.url
