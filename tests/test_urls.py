"""URLs: point them at another database keeping everything else, and print them without secrets."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import pwd
from urllib.parse import quote, unquote, urlsplit

import psycopg
import pytest
from _pytest._io.saferepr import saferepr

from helpers import RUNNING_SERVER_URL, server_answers
from unmocked.errors import ConfigurationError
from unmocked.urls import (
    DatabaseURL,
    database_of,
    libpq_params,
    local_url,
    redact,
    server_url,
    with_database,
    with_driver,
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "postgresql://app:s3cret@db.example:5432/app",
            "postgresql://app:***@db.example:5432/app",
        ),
        ("postgres://app:p%40ss%2Fw0rd@db/app", "postgres://app:***@db/app"),
        ("postgresql://:s3cret@db/app", "postgresql://:***@db/app"),
        ("host=db user=app password=s3cret dbname=app", "host=db user=app password=*** dbname=app"),
        ("host=db password = 'two words' dbname=app", "host=db password = *** dbname=app"),
        ("PGPASSWORD=s3cret psql", "PGPASSWORD=*** psql"),
        (
            "cannot reach postgresql://a:one@h1/x, then postgresql://b:two@h2/y",
            "cannot reach postgresql://a:***@h1/x, then postgresql://b:***@h2/y",
        ),
    ],
)
def test_redact_hides_every_password_in_urls_and_key_value_dsns(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "host=db user=app dbname=app",
        'syntax error at or near "amount"',
    ],
)
def test_redact_leaves_text_without_a_password_unchanged(text: str) -> None:
    assert redact(text) == text


def test_redact_hides_a_quoted_dsn_password_that_contains_an_escaped_quote() -> None:
    shown = redact(r"host=db password='it\'s s3cret' dbname=app")

    assert "s3cret" not in shown
    assert shown == "host=db password=*** dbname=app"


def test_with_database_keeps_credentials_host_port_and_parameters() -> None:
    url = "postgresql://app:s3cret@db.example:6543/postgres?sslmode=require"

    assert with_database(url, "unmocked_tpl_abc") == (
        "postgresql://app:s3cret@db.example:6543/unmocked_tpl_abc?sslmode=require"
    )


def test_with_database_quotes_characters_that_are_not_allowed_in_a_url_path() -> None:
    assert with_database("postgresql://h/postgres", "a b/c") == "postgresql://h/a%20b%2Fc"


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("postgresql://u@h:5432/orders", "orders"),
        ("postgresql://u@h:5432/", "postgres"),
        ("postgresql://u@h:5432", "postgres"),
    ],
)
def test_database_of_names_the_database_and_defaults_to_postgres(url: str, database: str) -> None:
    assert database_of(url) == database


def test_database_of_reads_back_the_name_with_database_wrote() -> None:
    assert database_of(with_database("postgresql://u@h/postgres", "my db")) == "my db"


def test_local_url_carries_the_clusters_secret_quoted_and_names_the_database() -> None:
    assert (
        local_url("127.0.0.1", 54321, "postgres", "a/b@c")
        == "postgresql://postgres:a%2Fb%40c@127.0.0.1:54321/postgres"
    )


def test_with_driver_puts_the_sqlalchemy_driver_in_the_scheme_and_keeps_the_rest() -> None:
    url = "postgresql://app:s3cret@db:5432/app?sslmode=require"

    assert (
        with_driver(url, "psycopg") == "postgresql+psycopg://app:s3cret@db:5432/app?sslmode=require"
    )


# -- DatabaseURL: a str everywhere, its password hidden in repr -----------------------------------

SECRET = "p@ss:w/rd%"
SECRET_URL = f"postgresql://app:{quote(SECRET, safe='')}@db.example:5432/app"


def test_a_database_url_repr_hides_the_password_raw_and_encoded() -> None:
    url = DatabaseURL(SECRET_URL)

    for shown in (repr(url), repr([url]), repr({"url": url}), saferepr(url), saferepr(url, 20)):
        assert SECRET not in shown
        assert quote(SECRET, safe="") not in shown
    assert repr(url) == "'postgresql://app:***@db.example:5432/app'"


def test_a_database_url_is_the_plain_url_to_str_format_compare_hash_split_and_pickle() -> None:
    url = DatabaseURL(SECRET_URL)

    assert str(url) == f"{url}" == format(url) == SECRET_URL
    assert type(str(url)) is str
    assert url == SECRET_URL and hash(url) == hash(SECRET_URL)
    assert {SECRET_URL: 1}[url] == 1
    assert unquote(urlsplit(url).password or "") == SECRET  # dj-database-url's way, Django's
    assert pickle.loads(pickle.dumps(url)) == url
    assert json.loads(json.dumps({"url": url})) == {"url": SECRET_URL}


def test_a_database_url_connects_with_psycopg_asyncpg_and_sqlalchemy() -> None:
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    url = server_url(RUNNING_SERVER_URL)
    sqlalchemy = pytest.importorskip("sqlalchemy")
    asyncpg = pytest.importorskip("asyncpg")

    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert sqlalchemy.make_url(with_driver(url, "psycopg")).password == url_password(url)
    with sqlalchemy.create_engine(with_driver(url, "psycopg")).connect() as conn:
        assert conn.scalar(sqlalchemy.text("SELECT 1")) == 1

    async def asyncpg_answers() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT 1"))
        finally:
            await conn.close()

    assert asyncio.run(asyncpg_answers()) == 1


def url_password(url: str) -> str | None:
    password = urlsplit(url).password
    return unquote(password) if password is not None else None


def test_urls_made_from_a_database_url_are_database_urls_too() -> None:
    url = DatabaseURL(SECRET_URL)

    for made in (with_database(url, "other"), with_driver(url, "asyncpg")):
        assert isinstance(made, DatabaseURL)
        assert SECRET not in repr(made) and quote(SECRET, safe="") not in repr(made)
    assert isinstance(with_database("postgresql://h/postgres", "x"), DatabaseURL)


# -- server_url: the one URL unmocked reads from UNMOCKED_DATABASE_URL ----------------------------

NO_LIBPQ_VARIABLES: dict[str, str] = {}


@pytest.mark.parametrize(
    ("given", "read"),
    [
        (
            "host=127.0.0.1 port=5432 user=postgres password=x dbname=postgres",
            "postgresql://postgres:x@127.0.0.1:5432/postgres",
        ),
        (
            "host=db.example user=a@b password='two words' sslmode=require",
            "postgresql://a%40b:two%20words@db.example:5432/postgres?sslmode=require",
        ),
        (
            "postgres://app:p%40ss@db.example/app?sslmode=require",
            "postgresql://app:p%40ss@db.example:5432/app?sslmode=require",
        ),
        ("postgresql://app@[::1]:6543/app", "postgresql://app@[::1]:6543/app"),
        ("hostaddr=10.0.0.7 user=app", "postgresql://app@10.0.0.7:5432/postgres"),
        # A socket folder goes in the query: SQLAlchemy and asyncpg both read it there.
        (
            "host=/var/run/postgresql user=postgres",
            "postgresql://postgres@/postgres?host=/var/run/postgresql&port=5432",
        ),
        (
            "postgresql://postgres@%2Ftmp%2FMy%20Sockets:5433/postgres",
            "postgresql://postgres@/postgres?host=/tmp/My%20Sockets&port=5433",
        ),
    ],
)
def test_server_url_reads_a_url_or_a_dsn_into_one_complete_url(given: str, read: str) -> None:
    url = server_url(given, environ=NO_LIBPQ_VARIABLES)

    assert (url, type(url)) == (read, DatabaseURL)


def test_server_url_fills_what_the_url_leaves_out_as_libpq_would_and_the_database_as_postgres() -> (
    None
):
    env = {"PGHOST": "db.example", "PGPORT": "6543", "PGUSER": "app", "PGDATABASE": "exported"}

    assert server_url("postgresql://", environ=env) == "postgresql://app@db.example:6543/postgres"
    assert server_url("dbname=app", environ=env) == "postgresql://app@db.example:6543/app"
    assert server_url("postgresql://other@h:1/x", environ=env) == "postgresql://other@h:1/x"
    assert server_url("host=h", environ={}) == (
        f"postgresql://{pwd.getpwuid(os.geteuid()).pw_name}@h:5432/postgres"
    )


def test_server_url_reads_its_own_url_back_unchanged() -> None:
    once = server_url("host=/run/pg user=a password='x y' dbname=b sslmode=disable", environ={})

    assert server_url(once, environ={}) == once


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            "http://user:s3cret@example.com/db",
            "'http://user:***@example.com/db' is not a PostgreSQL",
        ),
        ("garbage", "'garbage' is not a PostgreSQL URL (missing \"=\""),
        ("mysql://root:s3cret@db/app", "is not a PostgreSQL URL"),
        ("hots=db password=s3cret", 'is not a PostgreSQL URL (invalid connection option "hots")'),
        ("postgresql+asyncpg://u:s3cret@db/app", "is a SQLAlchemy URL"),
        ("postgresql:///postgres", "names no host (and PGHOST is not set)"),
        ("user=postgres password=s3cret", "names no host"),
        ("postgresql://u:s3cret@h1,h2/app", "names several hosts (h1,h2)"),
        ("postgresql://u:s3cret@db:five/app", "the port 'five' is not a number"),
    ],
)
def test_server_url_refuses_what_is_not_one_postgresql_server_naming_the_setting(
    given: str, said: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        server_url(given, "UNMOCKED_DATABASE_URL", environ={})

    message = str(raised.value)
    assert message.startswith("UNMOCKED_DATABASE_URL = ")
    assert said in message
    assert "s3cret" not in message
    assert "\n" not in message


def test_libpq_params_are_what_libpq_reads_decoded_with_the_query_winning() -> None:
    assert libpq_params("postgresql://u:p%40ss@h:6543/db?host=/run/pg&sslmode=require") == {
        "user": "u",
        "password": "p@ss",
        "host": "/run/pg",
        "port": "6543",
        "dbname": "db",
        "sslmode": "require",
    }
