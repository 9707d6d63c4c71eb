"""URLs: point them at another database keeping everything else, and print them without secrets."""

from __future__ import annotations

import pytest

from unmocked.urls import database_of, local_url, redact, with_database, with_driver


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


def test_local_url_has_no_password_and_names_the_database() -> None:
    assert (
        local_url("127.0.0.1", 54321, "postgres")
        == "postgresql://postgres@127.0.0.1:54321/postgres"
    )


def test_with_driver_puts_the_sqlalchemy_driver_in_the_scheme_and_keeps_the_rest() -> None:
    url = "postgresql://app:s3cret@db:5432/app?sslmode=require"

    assert (
        with_driver(url, "psycopg") == "postgresql+psycopg://app:s3cret@db:5432/app?sslmode=require"
    )
