"""Migration sources: what ``unmocked_migrations`` loads, how each builds a schema, and what it says
when PostgreSQL rejects it.

Schemas are built into real, empty databases on the server at ``ADMIN_URL``; each test's database
is named ``unmocked_*`` and dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import (
    DDL,
    CheckConstraint,
    Column,
    Connection,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Sequence,
    Table,
    Text,
    event,
)
from sqlalchemy import text as sql_text

from unmocked import ownership
from unmocked.errors import ConfigurationError, MigrationError
from unmocked.migrations import NoMigrations, load
from unmocked.migrations.python_object import PythonCallable, SqlAlchemyMetadata
from unmocked.migrations.sql_files import SqlFiles
from unmocked.migrations.sql_statements import line_of_offset, split_statements
from unmocked.ownership import Owner
from unmocked.urls import with_database

ADMIN_URL = os.environ.get(
    "UNMOCKED_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch_database() -> Iterator[str]:
    """URL of one database for this module, owned by a live run so no other session collects it."""
    lease = ownership.Lease(ADMIN_URL, ownership.new_run_id())
    name = f"{ownership.PREFIX}test_{lease.run_id}_migrations"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        ownership.create_database(admin, name, Owner("fresh", run=lease.run_id), "template0", None)
        try:
            yield with_database(ADMIN_URL, name)
        finally:
            ownership.drop_database(admin, name)
            lease.close()


@pytest.fixture
def empty_database(scratch_database: str) -> str:
    """URL of a database with nothing in it: the module's scratch database, emptied."""
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    return scratch_database


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write Python source as a new module importable from ``tmp_path``; return the module name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"unmocked_user_module_{secrets.token_hex(4)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def write_sql_files(folder: Path, files: dict[str, str]) -> Path:
    """Write ``{file name: SQL}`` into ``folder`` (created if needed); return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def lines(*text: str) -> str:
    """One line per argument, so a test shows the line numbers it expects."""
    return "\n".join(text) + "\n"


def tables_in(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {str(row[0]) for row in rows}


def migration_error(source: SqlFiles, url: str) -> str:
    with pytest.raises(MigrationError) as raised:
        source.apply(url)
    return str(raised.value)


# -- load() -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["", "   "])
def test_empty_setting_is_an_empty_database(spec: str, tmp_path: Path) -> None:
    source = load(spec, tmp_path)

    assert isinstance(source, NoMigrations)
    assert source.describe() == "no migrations"


def test_folder_is_resolved_against_the_project_root_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    write_sql_files(project / "db" / "migrations", {"001_a.sql": "SELECT 1;", "002_b.sql": ""})
    (project / "db" / "migrations" / "notes.txt").write_text("not a migration")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    source = load("db/migrations", project)

    assert isinstance(source, SqlFiles)
    assert source.describe() == "2 SQL files in db/migrations"


def test_module_attribute_naming_sqlalchemy_metadata_builds_its_tables(
    tmp_path: Path, write_module: Callable[[str], str], empty_database: str
) -> None:
    module = write_module(
        """
        from sqlalchemy import Text
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

        class Base(DeclarativeBase):
            pass

        class Widget(Base):
            __tablename__ = "widgets"
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str] = mapped_column(Text)
        """
    )
    url = empty_database

    source = load(f"{module}:Base.metadata", tmp_path)
    source.apply(url)

    assert isinstance(source, SqlAlchemyMetadata)
    assert source.describe() == f"SQLAlchemy metadata {module}:Base.metadata (1 tables)"
    assert tables_in(url) == {"widgets"}


def test_module_attribute_naming_a_callable_is_called_with_the_database_url(
    tmp_path: Path, write_module: Callable[[str], str], empty_database: str
) -> None:
    module = write_module(
        """
        import psycopg

        def build_schema(url):
            with psycopg.connect(url) as conn:
                conn.execute("CREATE TABLE gadgets (id int)")
        """
    )
    url = empty_database

    source = load(f"{module}:build_schema", tmp_path)
    source.apply(url)

    assert isinstance(source, PythonCallable)
    assert tables_in(url) == {"gadgets"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("no_such_folder", "is not a directory of .sql files"),
        ("schema.sql", "is not a directory of .sql files"),
        ("unmocked_no_such_module:build", "cannot import 'unmocked_no_such_module'"),
        ("{module}:no_such_function", "has no attribute 'no_such_function'"),
        ("{module}:VERSION", "names a int, which is neither a SQLAlchemy MetaData nor a callable"),
    ],
)
def test_setting_that_names_nothing_usable_is_a_configuration_error_saying_why(
    spec: str, expected: str, tmp_path: Path, write_module: Callable[[str], str]
) -> None:
    (tmp_path / "schema.sql").write_text("CREATE TABLE t (id int);")
    spec = spec.format(module=write_module("VERSION = 3\n"))

    with pytest.raises(ConfigurationError) as raised:
        load(spec, tmp_path)

    message = str(raised.value)
    assert message.startswith(f"unmocked_migrations = {spec!r}")
    assert expected in message


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("import os\nRATE = 1 / 0\n", "ZeroDivisionError: division by zero"),
        (
            "import os\nimport unmocked_no_such_dependency\n",
            "ModuleNotFoundError: No module named 'unmocked_no_such_dependency'",
        ),
        (
            "import json\nSETTINGS = json.loads('{')\n",
            "JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 "
            "(char 1)",
        ),
        ("import os\ndef broken(:\n    pass\n", "SyntaxError: invalid syntax"),
    ],
    ids=["raises", "lacks-a-dependency", "fails-inside-the-standard-library", "syntax-error"],
)
def test_module_that_fails_while_imported_is_a_migration_error_at_its_own_line(
    source: str, error: str, tmp_path: Path, write_module: Callable[[str], str]
) -> None:
    module = write_module(source)

    with pytest.raises(MigrationError) as raised:
        load(f"{module}:metadata", tmp_path)

    assert str(raised.value) == (
        f"unmocked_migrations = '{module}:metadata': importing {module} failed at "
        f"{tmp_path / (module + '.py')}, line 2: {error}. Fix the module and run again; "
        "nothing was cached."
    )


# -- SQL files: order and fingerprint ---------------------------------------------------------


def test_sql_files_are_applied_in_file_name_order(tmp_path: Path, empty_database: str) -> None:
    folder = tmp_path / "migrations"
    # Written in reverse, so neither creation time nor directory order can pass for name order.
    write_sql_files(folder, {"010_more.sql": "INSERT INTO applied (file) VALUES ('010');"})
    write_sql_files(folder, {"002_next.sql": "INSERT INTO applied (file) VALUES ('002');"})
    write_sql_files(
        folder,
        {
            "001_first.sql": lines(
                "CREATE TABLE applied (position serial PRIMARY KEY, file text NOT NULL);",
                "INSERT INTO applied (file) VALUES ('001');",
            )
        },
    )
    url = empty_database

    SqlFiles(folder, tmp_path).apply(url)

    with psycopg.connect(url) as conn:
        applied = conn.execute("SELECT file FROM applied ORDER BY position").fetchall()
    assert [row[0] for row in applied] == ["001", "002", "010"]


def test_sql_files_fingerprint_is_stable_while_files_do_not_change(tmp_path: Path) -> None:
    files = {"001_users.sql": "CREATE TABLE users (id int);", "002_x.sql": "SELECT 1;"}
    here = SqlFiles(write_sql_files(tmp_path / "here", files), tmp_path)
    copy = SqlFiles(write_sql_files(tmp_path / "copy", files), tmp_path)
    before = here.fingerprint()
    os.utime(here.folder / "001_users.sql", (0, 0))
    (here.folder / "README.md").write_text("Only .sql files are migrations.")

    assert here.fingerprint() == before
    assert copy.fingerprint() == before


@pytest.mark.parametrize("change", ["content", "name", "new file", "removed file"])
def test_sql_files_fingerprint_changes_when_a_file_changes(change: str, tmp_path: Path) -> None:
    folder = write_sql_files(
        tmp_path / "migrations",
        {"001_users.sql": "CREATE TABLE users (id int);", "002_x.sql": "SELECT 1;"},
    )
    source = SqlFiles(folder, tmp_path)
    before = source.fingerprint()

    if change == "content":
        (folder / "001_users.sql").write_text("CREATE TABLE users (id bigint);")
    elif change == "name":
        (folder / "002_x.sql").rename(folder / "003_x.sql")
    elif change == "new file":
        (folder / "003_y.sql").write_text("")
    else:
        (folder / "002_x.sql").unlink()

    assert source.fingerprint() != before


# -- SQLAlchemy MetaData fingerprint ----------------------------------------------------------


def users_metadata(*extra: Column[object]) -> MetaData:
    metadata = MetaData()
    Table("users", metadata, Column("id", Integer, primary_key=True), Column("email", Text), *extra)
    return metadata


def test_metadata_fingerprint_is_the_same_for_the_same_schema() -> None:
    first = SqlAlchemyMetadata("models:metadata", users_metadata())
    second = SqlAlchemyMetadata("models:metadata", users_metadata())

    assert first.fingerprint() == second.fingerprint()


def test_metadata_fingerprint_changes_when_a_column_is_added() -> None:
    before = SqlAlchemyMetadata("models:metadata", users_metadata()).fingerprint()
    with_nickname = users_metadata(Column("nickname", Text))

    assert SqlAlchemyMetadata("models:metadata", with_nickname).fingerprint() != before


def test_metadata_fingerprint_changes_when_an_index_is_added() -> None:
    before = SqlAlchemyMetadata("models:metadata", users_metadata()).fingerprint()
    indexed = users_metadata()
    Index("users_email", indexed.tables["users"].c.email)

    assert SqlAlchemyMetadata("models:metadata", indexed).fingerprint() != before


def orders_metadata(**changes: object) -> MetaData:
    """An ``orders`` table with one of each thing ``create_all`` emits besides ``CREATE TABLE``;
    ``changes`` replace the defaults below, one at a time."""
    shape: dict[str, Any] = {
        "statuses": ("new", "paid"),
        "first_id": 1,
        "check": "amount > 0",
        "table_comment": "Orders placed by users",
        "column_comment": "In cents",
        "table_ddl": "CREATE INDEX orders_recent ON orders (id DESC)",
        "metadata_ddl": "CREATE SCHEMA audit",
        "listener_sql": "INSERT INTO orders (id, amount) VALUES (nextval('order_ids'), 1)",
        "driver_sql": "ALTER TABLE orders ALTER COLUMN amount SET STATISTICS 100",
        **changes,
    }
    metadata = MetaData()
    orders = Table(
        "orders",
        metadata,
        Column("id", Integer, Sequence("order_ids", start=shape["first_id"]), primary_key=True),
        Column("status", Enum(*shape["statuses"], name="order_status")),
        Column("amount", Integer, comment=shape["column_comment"]),
        CheckConstraint(shape["check"], name="amount_is_positive"),
        comment=shape["table_comment"],
    )
    for column in ("status", "amount", "id"):  # indexes sit in a set: their order varies
        Index(f"orders_{column}", orders.c[column])
    event.listen(orders, "after_create", DDL(shape["table_ddl"]))
    event.listen(metadata, "before_create", DDL(shape["metadata_ddl"]))

    def insert_first_order(target: Table, connection: Connection, **kw: object) -> None:
        connection.execute(sql_text(shape["listener_sql"]))

    def tune_statistics(target: Table, connection: Connection, **kw: object) -> None:
        connection.exec_driver_sql(shape["driver_sql"])

    event.listen(orders, "after_create", insert_first_order)
    event.listen(orders, "after_create", tune_statistics)
    return metadata


def test_metadata_fingerprint_is_the_same_however_sqlalchemy_orders_its_sets() -> None:
    fingerprints = {
        SqlAlchemyMetadata("models:metadata", orders_metadata()).fingerprint() for _ in range(8)
    }

    assert len(fingerprints) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"statuses": ("new", "paid", "refunded")},
        {"first_id": 1000},
        {"check": "amount >= 0"},
        {"table_comment": "Orders"},
        {"column_comment": "In euros"},
        {"table_ddl": "CREATE INDEX orders_recent ON orders (id DESC, amount)"},
        {"metadata_ddl": "CREATE SCHEMA history"},
        {"listener_sql": "INSERT INTO orders (id, amount) VALUES (nextval('order_ids'), 2)"},
        {"driver_sql": "ALTER TABLE orders ALTER COLUMN amount SET STATISTICS 200"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_metadata_fingerprint_changes_with_anything_create_all_would_run(
    change: dict[str, object],
) -> None:
    before = SqlAlchemyMetadata("models:metadata", orders_metadata()).fingerprint()

    assert SqlAlchemyMetadata("models:metadata", orders_metadata(**change)).fingerprint() != before


def test_metadata_built_by_create_all_is_what_its_fingerprint_describes(
    empty_database: str,
) -> None:
    SqlAlchemyMetadata("models:metadata", orders_metadata()).apply(empty_database)

    with psycopg.connect(empty_database) as conn:
        statuses = conn.execute("SELECT enum_range(NULL::order_status)::text").fetchone()
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()
        comment = conn.execute("SELECT obj_description('orders'::regclass)").fetchone()
    assert statuses == ("{new,paid}",)
    assert orders == (1,)
    assert comment == ("Orders placed by users",)


LISTENER_THAT_READS = """
    from sqlalchemy import Column, Integer, MetaData, Table, event, text

    metadata = MetaData()
    counters = Table("counters", metadata, Column("value", Integer))

    @event.listens_for(counters, "after_create")
    def seed(target, connection, **kw):
        if connection.execute(text("SELECT count(*) FROM counters")).scalar() == 0:
            connection.execute(text("INSERT INTO counters VALUES ({value})"))
"""


def test_metadata_whose_listener_reads_the_database_is_fingerprinted_by_the_listener_source(
    tmp_path: Path, write_module: Callable[[str], str], empty_database: str
) -> None:
    # The listener reads a result, which a dry run of create_all cannot give it.
    first = load(f"{write_module(LISTENER_THAT_READS.format(value=1))}:metadata", tmp_path)
    again = load(f"{write_module(LISTENER_THAT_READS.format(value=1))}:metadata", tmp_path)
    changed = load(f"{write_module(LISTENER_THAT_READS.format(value=2))}:metadata", tmp_path)

    assert first.fingerprint() == again.fingerprint()
    assert changed.fingerprint() != first.fingerprint()
    changed.apply(empty_database)
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT value FROM counters").fetchall() == [(2,)]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            "nowhere.id",
            "models:metadata: the foreign key of orders.user_id points at nowhere.id, but the "
            "MetaData has no table nowhere (SQLAlchemy). Define that table on the same MetaData "
            "(import the module that defines it from the one unmocked_migrations names), or fix "
            "the ForeignKey; nothing was cached.",
        ),
        (
            "users.uid",
            "models:metadata: the foreign key of orders.user_id points at users.uid, but table "
            "users has no column uid (SQLAlchemy). Fix the ForeignKey; nothing was cached.",
        ),
    ],
    ids=["missing-table", "missing-column"],
)
def test_foreign_key_that_resolves_to_nothing_is_a_migration_error_naming_the_column(
    target: str, expected: str
) -> None:
    metadata = users_metadata()
    Table("orders", metadata, Column("user_id", Integer, ForeignKey(target)))

    with pytest.raises(MigrationError) as raised:
        SqlAlchemyMetadata("models:metadata", metadata).fingerprint()

    assert str(raised.value) == expected


# -- errors that point at the line ------------------------------------------------------------


def test_syntax_error_names_the_file_the_real_line_and_postgresql_message(
    tmp_path: Path, empty_database: str
) -> None:
    folder = write_sql_files(
        tmp_path / "migrations",
        {
            "001_users.sql": "CREATE TABLE users (id int PRIMARY KEY);\n",
            "002_broken.sql": lines(
                "-- Orders placed by users.",
                "CREATE TABLE orders (",
                "    id serial PRIMARY KEY,",
                "    amount numeric NOT NULL",
                ");",
                "",
                "CREATE INDEX orders_amount ON orders",
                "    USING btree amount;",
            ),
        },
    )

    message = migration_error(SqlFiles(folder, tmp_path), empty_database)

    assert message == (
        'migrations/002_broken.sql, line 8: syntax error at or near "amount" (PostgreSQL). '
        "Fix the file and run again; nothing was cached."
    )


def test_syntax_error_inside_a_function_body_points_at_its_line_in_the_file(
    tmp_path: Path, empty_database: str
) -> None:
    folder = write_sql_files(
        tmp_path / "migrations",
        {
            "001_functions.sql": lines(
                "CREATE FUNCTION one() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;",
                "CREATE FUNCTION two() RETURNS int",
                "LANGUAGE plpgsql AS $body$",
                "BEGIN",
                "    RETURN 1 +;",
                "END",
                "$body$;",
            )
        },
    )

    message = migration_error(SqlFiles(folder, tmp_path), empty_database)

    assert message.startswith("migrations/001_functions.sql, line 5: syntax error")


def test_duplicate_key_reports_the_line_of_the_insert_that_failed(
    tmp_path: Path, empty_database: str
) -> None:
    folder = write_sql_files(
        tmp_path / "migrations",
        {
            "001_users.sql": lines(
                "CREATE TABLE users (",
                "    id int PRIMARY KEY,",
                "    email text",
                ");",
                "INSERT INTO users VALUES (1, 'a@example.com');",
                "",
                "INSERT INTO users VALUES (1, 'b@example.com');",
                "INSERT INTO users VALUES (2, 'c@example.com');",
            )
        },
    )

    message = migration_error(SqlFiles(folder, tmp_path), empty_database)

    assert message.startswith(
        "migrations/001_users.sql, line 7: duplicate key value violates unique constraint "
        '"users_pkey" (PostgreSQL).'
    )
    assert message.endswith("Fix the file and run again; nothing was cached.")


def test_runtime_error_reports_the_line_where_the_failing_statement_starts(
    tmp_path: Path, empty_database: str
) -> None:
    folder = write_sql_files(
        tmp_path / "migrations",
        {
            "001_totals.sql": "CREATE TABLE totals (ratio numeric);\n",
            "002_ratios.sql": lines(
                "INSERT INTO totals (ratio)",
                "VALUES (1);",
                "",
                "CREATE FUNCTION half(x numeric) RETURNS numeric",
                "LANGUAGE sql AS $$ SELECT x / 2; $$;",
                "",
                "",
                "",
                "INSERT INTO totals (ratio)",
                "SELECT",
                "    half(1) / 0;",
            ),
        },
    )

    message = migration_error(SqlFiles(folder, tmp_path), empty_database)

    assert message.startswith("migrations/002_ratios.sql, line 9: division by zero (PostgreSQL).")


@pytest.mark.parametrize(
    "script",
    [
        lines(
            "CREATE TABLE users (id int PRIMARY KEY);",
            "INSERT INTO users VALUES (1);",
            "",
            "-- A second user with the same id: the error must point",
            "-- at the INSERT below, not at this comment.",
            "INSERT INTO users VALUES (1);",
        ),
        lines(
            "CREATE TABLE users (id int PRIMARY KEY);",
            "INSERT INTO users VALUES (1);  -- the first user",
            "",
            "",
            "",
            "INSERT INTO users VALUES (1);",
        ),
    ],
    ids=["comment-above", "comment-trailing-previous-statement"],
)
def test_runtime_error_after_a_comment_reports_the_line_of_the_statement(
    script: str, tmp_path: Path, empty_database: str
) -> None:
    folder = write_sql_files(tmp_path / "migrations", {"001_users.sql": script})

    message = migration_error(SqlFiles(folder, tmp_path), empty_database)

    assert message.startswith("migrations/001_users.sql, line 6: duplicate key value")


def test_failing_file_leaves_none_of_its_statements_behind(
    tmp_path: Path, empty_database: str
) -> None:
    folder = write_sql_files(
        tmp_path / "migrations",
        {
            "001_users.sql": "CREATE TABLE users (id int PRIMARY KEY);\n",
            "002_orders.sql": lines(
                "CREATE TABLE orders (id int PRIMARY KEY);",
                "INSERT INTO users VALUES (1), (1);",
            ),
        },
    )
    url = empty_database

    migration_error(SqlFiles(folder, tmp_path), url)

    assert tables_in(url) == {"users"}


def test_failing_callable_reports_where_it_failed_without_the_password(
    tmp_path: Path, write_module: Callable[[str], str]
) -> None:
    module = write_module(
        """
        def build_schema(url):
            raise RuntimeError("cannot reach postgresql://app:s3cret@db/app")
        """
    )

    with pytest.raises(MigrationError) as raised:
        load(f"{module}:build_schema", tmp_path).apply("postgresql://unused")

    assert str(raised.value) == (
        f"{module}:build_schema failed at {tmp_path / (module + '.py')}, line 3: RuntimeError: "
        "cannot reach postgresql://app:***@db/app. Fix it and run again; nothing was cached."
    )


def test_failing_create_all_reports_postgresql_message(empty_database: str) -> None:
    broken = MetaData()
    Table("accounts", broken, Column("id", Integer))
    # A foreign key to a column that is not unique: PostgreSQL refuses it at CREATE TABLE.
    Table("orders", broken, Column("account_id", Integer, ForeignKey("accounts.id")))

    with pytest.raises(MigrationError) as raised:
        SqlAlchemyMetadata("models:metadata", broken).apply(empty_database)

    message = str(raised.value)
    assert message.startswith("models:metadata: create_all failed: there is no unique constraint")
    assert message.endswith("(PostgreSQL). Fix the model and run again; nothing was cached.")


# -- split_statements and line_of_offset ------------------------------------------------------


def statements_of(script: str) -> list[str]:
    """The statements, stripped, after checking that each offset points at its statement."""
    found = split_statements(script)
    for offset, statement in found:
        assert script[offset : offset + len(statement)] == statement
    return [statement.strip() for _, statement in found]


def test_split_keeps_semicolons_inside_dollar_quoted_function_bodies() -> None:
    script = lines(
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$",
        "BEGIN PERFORM 1; RETURN 2; END",
        "$$;",
        "CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $fn$ SELECT '$$;' $fn$;",
        "SELECT 3;",
    )

    assert statements_of(script) == [
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
        "BEGIN PERFORM 1; RETURN 2; END\n"
        "$$",
        "CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $fn$ SELECT '$$;' $fn$",
        "SELECT 3",
    ]


def test_split_ignores_semicolons_in_comments_including_nested_block_comments() -> None:
    script = lines(
        "SELECT 1; -- not a statement; nor this",
        "/* outer; /* inner; */ still comment; */ SELECT 2;",
        "SELECT 3 /* ; */;",
    )

    assert statements_of(script) == [
        "SELECT 1",
        "-- not a statement; nor this\n/* outer; /* inner; */ still comment; */ SELECT 2",
        "SELECT 3 /* ; */",
    ]


def test_split_ignores_semicolons_in_strings_and_quoted_identifiers() -> None:
    script = (
        "SELECT E'it\\'s; fine';"
        " SELECT 'don''t; split';"
        ' SELECT 1 AS "odd;""name";'
        " SELECT 'C:\\'; SELECT 2;"
    )

    assert statements_of(script) == [
        "SELECT E'it\\'s; fine'",
        "SELECT 'don''t; split'",
        'SELECT 1 AS "odd;""name"',
        "SELECT 'C:\\'",
        "SELECT 2",
    ]


def test_split_leaves_out_parts_with_only_whitespace_and_comments() -> None:
    script = "SELECT 1;\n  -- trailing note\n;  /* gone */  ;\n"

    assert statements_of(script) == ["SELECT 1"]


def test_split_leaves_out_parts_with_only_a_nested_block_comment() -> None:
    script = "SELECT 1;\n/* outer /* inner */ still comment */\n"

    assert statements_of(script) == ["SELECT 1"]


def test_offsets_of_statements_map_to_the_lines_they_start_on() -> None:
    script = lines(
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$",  # 1
        "    SELECT 1;",  # 2
        "$$;",  # 3
        "/* a; */ SELECT 'x;",  # 4
        "y';",  # 5
        'SELECT "a;',  # 6
        'b";',  # 7
    )
    starts = [
        line_of_offset(script, offset + len(text) - len(text.lstrip()))
        for offset, text in split_statements(script)
    ]

    assert starts == [1, 4, 6]


@pytest.mark.parametrize(
    ("offset", "line"), [(-5, 1), (0, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (999, 3)]
)
def test_line_of_offset_counts_lines_from_one_and_clamps_out_of_range_offsets(
    offset: int, line: int
) -> None:
    assert line_of_offset("ab\nc\nd", offset) == line
