"""Bad or surprising input gets one paragraph saying what, where and what to do, on every
provider: never an INTERNALERROR, a traceback, or input silently ignored.

Each project is a whole pytester run; the output is checked for the paragraph and for the absence
of pytest's internal-error and traceback walls.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from helpers import RUNNING_SERVER_URL, a_role_of_its_own, server_answers, write_files
from unmocked import servers
from unmocked.errors import ServerError
from unmocked.servers import binaries, existing, wheels
from unmocked.settings import Settings

PYTEST_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
USES_THE_DATABASE = "def test_uses_the_database(pg):\n    pg.execute('SELECT 1')\n"


def said_in_one_paragraph(result: pytest.RunResult, paragraph: str) -> None:
    """``paragraph`` is a line of the run's output, and no internal error or traceback is."""
    output = result.stdout.str() + result.stderr.str()
    # A test's error is printed as "E   <paragraph>", a warning as "  <file>:<line>: <paragraph>".
    assert any(line.endswith(paragraph) for line in output.splitlines()), output
    assert "INTERNALERROR" not in output
    assert "Traceback" not in output


# -- item: a migrations module that raises while it is imported -----------------------------


def test_migrations_module_that_raises_at_import_is_named_with_its_line(
    user_project: pytest.Pytester, set_migrations: Callable[[str], None]
) -> None:
    set_migrations("broken_models:metadata")
    write_files(
        user_project.path,
        {
            "broken_models.py": """
                import sqlalchemy as sa

                metadata = sa.MetaData()
                RATE = 1 / 0
            """
        },
    )
    user_project.makepyfile(USES_THE_DATABASE)

    result = user_project.runpytest("-p", "no:randomly")

    result.assert_outcomes(errors=1)
    said_in_one_paragraph(
        result,
        "unmocked_migrations = 'broken_models:metadata': importing broken_models failed at "
        f"{user_project.path / 'broken_models.py'}, line 4: ZeroDivisionError: division by "
        "zero. Fix the module and run again; nothing was cached.",
    )


def test_migrations_module_that_raises_at_import_is_imported_once_for_the_whole_run(
    user_project: pytest.Pytester, set_migrations: Callable[[str], None]
) -> None:
    """The failure is kept: three tests get the one paragraph, the module is not run three times."""
    set_migrations("broken_models:metadata")
    imports = user_project.path / "imports.txt"
    write_files(
        user_project.path,
        {
            "broken_models.py": f"""
                with open({str(imports)!r}, "a") as record:
                    record.write("imported\\n")
                RATE = 1 / 0
            """
        },
    )
    user_project.makepyfile(
        "import pytest\n\n"
        "@pytest.mark.parametrize('n', range(3))\n"
        "def test_uses_the_database(pg, n):\n    pg.execute('SELECT 1')\n"
    )

    result = user_project.runpytest("-p", "no:randomly")

    result.assert_outcomes(errors=3)
    assert imports.read_text() == "imported\n"


# -- item: a .sql file that is not UTF-8 ----------------------------------------------------


def test_sql_file_that_is_not_utf8_is_named_with_the_line_of_the_bad_byte(
    user_project: pytest.Pytester,
) -> None:
    (user_project.path / "migrations" / "002_cities.sql").write_bytes(
        "CREATE TABLE cities (name text);\nINSERT INTO cities VALUES ('Liège');\n".encode("latin-1")
    )
    user_project.makepyfile(USES_THE_DATABASE)

    result = user_project.runpytest("-p", "no:randomly")

    result.assert_outcomes(errors=1)
    said_in_one_paragraph(
        result,
        "migrations/002_cities.sql, line 2: byte 0xe8 is not UTF-8, the encoding unmocked reads "
        ".sql files in. Save the file as UTF-8 (iconv -f latin1 -t utf-8 converts a Latin-1 "
        "file) and run again; nothing was cached.",
    )


def test_sql_file_starting_with_a_utf8_byte_order_mark_is_applied(
    user_project: pytest.Pytester,
) -> None:
    (user_project.path / "migrations" / "002_notes.sql").write_bytes(
        "\ufeffCREATE TABLE notes (id int);\n".encode()
    )
    user_project.makepyfile("def test_notes(pg):\n    pg.execute('SELECT * FROM notes')\n")

    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


# -- item: a MetaData whose foreign key points at nothing -----------------------------------


def test_metadata_with_a_foreign_key_to_a_missing_table_names_the_column(
    user_project: pytest.Pytester, set_migrations: Callable[[str], None]
) -> None:
    set_migrations("models:metadata")
    write_files(
        user_project.path,
        {
            "models.py": """
                import sqlalchemy as sa

                metadata = sa.MetaData()
                orders = sa.Table(
                    "orders",
                    metadata,
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")),
                )
            """
        },
    )
    user_project.makepyfile(USES_THE_DATABASE)

    result = user_project.runpytest("-p", "no:randomly")

    result.assert_outcomes(errors=1)
    said_in_one_paragraph(
        result,
        "models:metadata: the foreign key of orders.customer_id points at customers.id, but the "
        "MetaData has no table customers (SQLAlchemy). Define that table on the same MetaData "
        "(import the module that defines it from the one unmocked_migrations names), or fix the "
        "ForeignKey; nothing was cached.",
    )


# -- item: UNMOCKED_DATABASE_URL with a role whose sessions are read-only -------------------


@pytest.fixture
def read_only_role() -> Iterator[str]:
    """A role on the running server that may create databases, but whose sessions are
    read-only (``ALTER ROLE ... SET default_transaction_read_only = on``); dropped after."""
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    role = f"unmocked_test_read_only_{secrets.token_hex(4)}"
    with (
        a_role_of_its_own(RUNNING_SERVER_URL, role, "CREATEDB"),
        psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as admin,
    ):
        admin.execute(
            sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
                sql.Identifier(role)
            )
        )
        yield role


def url_as(role: str) -> str:
    """The running server's URL, connecting as ``role`` (the test server trusts local roles)."""
    parts = urlsplit(RUNNING_SERVER_URL)
    return parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}").geturl()


def test_url_of_a_read_only_role_is_refused_when_the_run_attaches(
    pytester: pytest.Pytester,
    read_only_role: str,
    unmocked_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = url_as(read_only_role)
    monkeypatch.setenv("UNMOCKED_DATABASE_URL", url)
    monkeypatch.setenv("UNMOCKED_CACHE_DIR", str(unmocked_cache))
    monkeypatch.delenv("UNMOCKED_PROVIDER", raising=False)
    pytester.makeini(PYTEST_INI)
    pytester.makepyfile(USES_THE_DATABASE)

    result = pytester.runpytest("-p", "no:randomly")

    result.assert_outcomes(errors=1)
    said_in_one_paragraph(
        result,
        f"UNMOCKED_DATABASE_URL ({url}) connects as {read_only_role}, whose sessions are "
        f"read-only (default_transaction_read_only = on, set for role {read_only_role}), and "
        f"unmocked creates its databases there. Run ALTER ROLE {read_only_role} RESET "
        "default_transaction_read_only as an admin, or point UNMOCKED_DATABASE_URL at a role "
        "that may write.",
    )


@pytest.fixture
def read_only_database() -> Iterator[str]:
    """A database on the running server whose sessions start read-only; dropped after."""
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    name = f"unmocked_test_read_only_{secrets.token_hex(4)}"
    with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                sql.Identifier(name)
            )
        )
        try:
            yield name
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_url_whose_database_or_options_make_sessions_read_only_is_refused_saying_where(
    read_only_database: str,
) -> None:
    parts = urlsplit(RUNNING_SERVER_URL)
    in_that_database = parts._replace(path=f"/{read_only_database}").geturl()
    with_options = f"{RUNNING_SERVER_URL}?options=-c%20default_transaction_read_only%3Don"

    with pytest.raises(ServerError) as database_says:
        existing.attach(in_that_database)
    with pytest.raises(ServerError) as options_say:
        existing.attach(with_options)

    assert (
        f"(default_transaction_read_only = on, set for database {read_only_database}), and "
        f"unmocked creates its databases there. Run ALTER DATABASE {read_only_database} RESET "
        "default_transaction_read_only as an admin, or point UNMOCKED_DATABASE_URL at a role "
        "that may write."
    ) in str(database_says.value)
    assert (
        "(default_transaction_read_only = on, set by the connection's options), and unmocked "
        "creates its databases there. Remove it from the URL's options or PGOPTIONS, or point "
        "UNMOCKED_DATABASE_URL at a role that may write."
    ) in str(options_say.value)


# -- item: migrations that would be silently left out ---------------------------------------


def test_migrations_folder_without_sql_files_is_an_error_naming_it(
    user_project: pytest.Pytester,
) -> None:
    migrations = user_project.path / "migrations"
    (migrations / "001_schema.sql").unlink()
    write_files(migrations, {"README.md": "Schema changes, one file each.\n"})
    user_project.makepyfile(USES_THE_DATABASE)

    result = user_project.runpytest("-p", "no:randomly")

    result.assert_outcomes(errors=1)
    said_in_one_paragraph(
        result,
        "unmocked_migrations = 'migrations': migrations holds no .sql file (it holds README.md), "
        "so the template would be an empty database. Put the migrations there, point "
        "unmocked_migrations at the folder that holds them, or leave it empty for an empty "
        "database.",
    )


def test_sql_files_in_subfolders_are_named_in_a_warning_and_not_applied(
    user_project: pytest.Pytester,
) -> None:
    write_files(
        user_project.path / "migrations",
        {
            "down/001_schema.sql": "DROP TABLE orders, users;\n",
            "seeds/users.sql": "INSERT INTO users (email) VALUES ('seed@example.com');\n",
        },
    )
    user_project.makepyfile(
        "def test_no_seed_was_applied(pg):\n"
        "    assert pg.execute('SELECT count(*) FROM users').fetchone() == (0,)\n"
    )

    warning = (
        "unmocked_migrations = 'migrations': 2 .sql files in subfolders are not applied: "
        "migrations/down/001_schema.sql, migrations/seeds/users.sql. Only the .sql files "
        "directly in migrations are, in file-name order; move the ones that are migrations there."
    )

    result = user_project.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=1, warnings=1)
    said_in_one_paragraph(result, f"UnmockedWarning: {warning}")
    strict = user_project.runpytest("-p", "no:randomly", "-W", "error::unmocked.UnmockedWarning")
    strict.assert_outcomes(errors=1)
    said_in_one_paragraph(strict, warning)


def test_sql_files_with_an_upper_case_extension_are_applied_in_name_order(
    user_project: pytest.Pytester,
) -> None:
    write_files(
        user_project.path / "migrations",
        {
            "002_Notes.SQL": "CREATE TABLE notes (id int);\n",
            "003_more.sql": "ALTER TABLE notes ADD COLUMN body text;\n",
        },
    )
    user_project.makepyfile("def test_notes(pg):\n    pg.execute('SELECT id, body FROM notes')\n")

    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


# -- item: unmocked_pg_version under the default provider -----------------------------------


def postgresql_here(provider_name: str) -> list[str]:
    """What ``provider_name`` could start here, in the order it looks: ``embedded 18.6``, then
    ``local 15.4 (/usr/lib/postgresql/15/bin)`` newest first."""
    found: list[str] = []
    if provider_name in ("auto", "embedded"):
        found += [f"embedded {wheel.describe()}" for wheel in wheels.installed()]
    if provider_name in ("auto", "local"):
        found += [
            f"local {binaries._version_of(bindir)[0]} ({bindir})"
            for bindir in binaries.local_bindirs(None)
        ]
    return found


def test_pg_version_under_the_default_provider_starts_the_machines_binaries_of_that_major(
    default_provider: pytest.Pytester,
) -> None:
    wheel_majors = {wheel.major for wheel in wheels.installed()}
    local = binaries.local_bindirs(None)
    if not wheel_majors or not local:
        pytest.skip("needs both a PostgreSQL wheel and the machine's binaries")
    other = next((b for b in local if binaries._version_of(b)[1] not in wheel_majors), None)
    if other is None:
        pytest.skip("the machine's binaries are of a major an installed wheel has")
    wanted = binaries._version_of(other)[1]
    default_provider.makeini(f"{PYTEST_INI}unmocked_pg_version = {wanted}\n")
    default_provider.makepyfile(
        f"""
        def test_server(pg_server, pg):
            assert (pg_server.provider, pg_server.major) == ("local", {wanted})
            assert pg.info.server_version // 10000 == {wanted}
        """
    )

    default_provider.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


@pytest.mark.parametrize("provider_name", ["auto", "embedded", "local"])
def test_pg_version_no_provider_has_is_an_error_naming_the_versions_there_are(
    provider_name: str, default_provider: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    there = postgresql_here(provider_name)
    majors = {wheel.major for wheel in wheels.installed()}
    majors |= {binaries._version_of(bindir)[1] for bindir in binaries.local_bindirs(None)}
    wanted = next(major for major in range(13, 40) if major not in majors)
    monkeypatch.setenv("UNMOCKED_PROVIDER", provider_name)
    default_provider.makeini(f"{PYTEST_INI}unmocked_pg_version = {wanted}\n")
    default_provider.makepyfile(USES_THE_DATABASE)
    switch = " and unmocked_provider = auto" if provider_name == "embedded" else ""
    docker_switch = "" if provider_name == "auto" else " and unmocked_provider = docker"
    get_it = (
        f"apt-get install postgresql-{wanted} (or brew install postgresql@{wanted}; the machine's "
        f"binaries{switch}); or docker pull postgres:{wanted} (a Docker engine{docker_switch})"
    )

    # auto tries Docker last, and says why it could not serve (no SDK, no engine, no image).
    docker = servers._from_docker(Settings(provider="auto", pg_version=wanted), False)
    if isinstance(docker, servers.RunningServer):
        docker.close()
        pytest.skip(f"Docker serves PostgreSQL {wanted} here: {docker.server.describe()}")
    docker_note = f" Docker: {docker}" if provider_name == "auto" else ""

    result = default_provider.runpytest("-p", "no:randomly")

    result.assert_outcomes(errors=1)
    said_in_one_paragraph(
        result,
        f"unmocked_pg_version = {wanted}, but unmocked_provider = {provider_name} has no "
        f"PostgreSQL {wanted} here. Found: {'; '.join(there) or 'none'}. To get {wanted}: "
        f"{get_it}; or set UNMOCKED_DATABASE_URL to a server of that version, or "
        f"unmocked_pg_version to a version found.{docker_note}",
    )
