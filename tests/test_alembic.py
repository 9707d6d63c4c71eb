"""Alembic projects: ``unmocked_migrations = "alembic:alembic.ini"`` builds the template with
``alembic upgrade heads``, and ``check_migrations`` tells whether the migrations are ready.

Each test writes a real Alembic project (ini, env.py, revisions, models) and runs a whole pytest
session in it, as a user would. The build and the passing check run on a server of each kind; the
tests of what a failure says, or of which env.py styles work, run on the embedded server only: the
text and the Alembic behaviour do not depend on where the server came from.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import EACH_KIND_OF_SERVER, ONE_PROVIDER
from unmocked.errors import ConfigurationError
from unmocked.migrations import load
from unmocked.migrations.alembic import AlembicMigrations

PROVIDERS = EACH_KIND_OF_SERVER

ALEMBIC_INI = """
[alembic]
script_location = alembic
prepend_sys_path = .
path_separator = os
sqlalchemy.url = postgresql+psycopg://nobody@localhost/not_this_one

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

# The env.py `alembic init` writes, online mode only: reads sqlalchemy.url, configures logging.
ENV_PY = """
from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

import models

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)
target_metadata = models.Base.metadata

connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
"""

# The Alembic cookbook's "sharing a connection": only config.attributes["connection"] is used.
SHARED_CONNECTION_ENV_PY = """
from alembic import context

import models

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=models.Base.metadata)
with context.begin_transaction():
    context.run_migrations()
"""

# `alembic init -t async`: an async engine, driven by asyncio.run().
ASYNC_ENV_PY = """
import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import async_engine_from_config

import models

config = context.config

def run(connection):
    context.configure(connection=connection, target_metadata=models.Base.metadata)
    with context.begin_transaction():
        context.run_migrations()

async def main():
    engine = async_engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    async with engine.connect() as connection:
        await connection.run_sync(run)
    await engine.dispose()

asyncio.run(main())
"""

# An env.py that ignores the URL it is given, as one that reads its URL from the app's settings
# would. Here it writes the migrations as SQL to a buffer (Alembic's offline mode), so the test
# touches no database but the template unmocked builds.
ELSEWHERE_ENV_PY = """
import io
from alembic import context

context.configure(
    url="postgresql://app@db.internal/app", as_sql=True, output_buffer=io.StringIO()
)
with context.begin_transaction():
    context.run_migrations()
"""

CREATE_USERS = '''
"""create users"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

def upgrade():
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.Text, nullable=False, unique=True),
    )

def downgrade():
    op.drop_table("users")
'''

CREATE_ORDERS = '''
"""create orders"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

def upgrade():
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("status", sa.Enum("new", "paid", name="order_status"), nullable=False),
    )
    op.create_index("ix_orders_user_id", "orders", ["user_id"])

def downgrade():
    op.drop_table("orders")
    op.execute("DROP TYPE order_status")
'''

ADD_USER_NAMES = '''
"""add user names"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

def upgrade():
    op.add_column("users", sa.Column("name", sa.Text, nullable=True))

def downgrade():
    op.drop_column("users", "name")
'''

REVISIONS = {
    "0001_create_users.py": CREATE_USERS,
    "0002_create_orders.py": CREATE_ORDERS,
    "0003_add_user_names.py": ADD_USER_NAMES,
}

MODELS = """
from sqlalchemy import Enum, ForeignKey, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str | None] = mapped_column(Text)

class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(Enum("new", "paid", name="order_status"))
"""

CHECK_SUITE = """
from unmocked.integrations.alembic_check import check_migrations

def test_migrations_are_ready(pg_url):
    check_migrations(pg_url, "alembic.ini")
"""


def write_project(
    root: Path,
    *,
    env_py: str = ENV_PY,
    revisions: dict[str, str] | None = None,
    models: str = MODELS,
) -> Path:
    """Write an Alembic project into ``root``: alembic.ini, alembic/ (env.py, versions/), models.py.

    env.py carries the project's path in a comment, so its template is its own: never a cache hit
    left by another test on a shared server.
    """
    versions = root / "alembic" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (root / "alembic.ini").write_text(ALEMBIC_INI)
    (root / "alembic" / "env.py").write_text(f"# project {root}\n{env_py}")
    for name, text in (REVISIONS if revisions is None else revisions).items():
        (versions / name).write_text(textwrap.dedent(text))
    (root / "models.py").write_text(models)
    return root


@pytest.fixture
def alembic_project(
    user_project: pytest.Pytester, set_migrations: Callable[[str], None]
) -> pytest.Pytester:
    """A pytester project for one provider whose schema comes from its Alembic migrations."""
    write_project(user_project.path)
    set_migrations("alembic:alembic.ini")
    return user_project


def revision_file(project: pytest.Pytester, name: str) -> Path:
    return project.path / "alembic" / "versions" / name


# -- building the template ----------------------------------------------------------------------


def test_template_is_built_by_alembic_once_and_reused_by_the_next_run(
    alembic_project: pytest.Pytester,
) -> None:
    alembic_project.makepyfile(
        """
        def test_schema_is_migrated_to_the_head(pg):
            assert pg.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
            pg.execute("INSERT INTO users (email, name) VALUES ('a@example.com', 'A')")
            pg.execute("INSERT INTO orders (user_id, status) SELECT id, 'paid' FROM users")

        def test_fresh_database_is_migrated_too(pg_url):
            import psycopg
            with psycopg.connect(pg_url) as conn:
                assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        """
    )
    first = alembic_project.runpytest()
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["unmocked: *template * built in *"])

    second = alembic_project.runpytest()
    second.assert_outcomes(passed=2)
    second.stdout.fnmatch_lines(["unmocked: *template * reused*"])


@ONE_PROVIDER
def test_broken_revision_is_named_with_its_line_and_postgresql_message_and_nothing_is_cached(
    alembic_project: pytest.Pytester,
) -> None:
    broken = revision_file(alembic_project, "0003_add_user_names.py")
    broken.write_text(
        broken.read_text().replace(
            '"name", sa.Text, nullable=True)', '"name", sa.Text, sa.ForeignKey("nowhere.id"))'
        )
    )
    alembic_project.makepyfile("def test_uses_the_schema(pg):\n    pass\n")

    result = alembic_project.runpytest()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*alembic revision 0003 (add user names), "
            "alembic/versions/0003_add_user_names.py, line 10: "
            'relation "nowhere" does not exist (PostgreSQL). '
            "Fix it and run again; nothing was cached."
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "site-packages" not in result.stdout.str()

    broken.write_text(textwrap.dedent(ADD_USER_NAMES))
    fixed = alembic_project.runpytest()
    fixed.assert_outcomes(passed=1)
    fixed.stdout.fnmatch_lines(["unmocked: *template * built in *"])


@ONE_PROVIDER
def test_env_py_using_the_shared_connection_builds_the_template(
    alembic_project: pytest.Pytester,
) -> None:
    write_project(alembic_project.path, env_py=SHARED_CONNECTION_ENV_PY)
    alembic_project.makepyfile(
        """
        def test_schema_is_migrated_to_the_head(pg):
            assert pg.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
        """
    )
    alembic_project.runpytest().assert_outcomes(passed=1)


@ONE_PROVIDER
def test_env_py_that_migrates_another_database_is_refused(
    alembic_project: pytest.Pytester,
) -> None:
    write_project(alembic_project.path, env_py=ELSEWHERE_ENV_PY)
    alembic_project.makepyfile("def test_uses_the_schema(pg):\n    pass\n")

    result = alembic_project.runpytest()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*left the database unmocked gave it empty: env.py connects*"])


@ONE_PROVIDER
def test_config_file_in_a_subfolder_resolves_relative_paths_from_there(
    user_project: pytest.Pytester, set_migrations: Callable[[str], None]
) -> None:
    write_project(user_project.path / "db")
    set_migrations("alembic:db/alembic.ini")
    user_project.makepyfile(
        """
        def test_schema_is_migrated_to_the_head(pg):
            assert pg.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
        """
    )
    user_project.runpytest().assert_outcomes(passed=1)


@ONE_PROVIDER
def test_app_loggers_still_log_after_env_py_configured_logging(
    alembic_project: pytest.Pytester,
) -> None:
    alembic_project.makepyfile(
        """
        import logging

        app_log = logging.getLogger("myapp")  # exists before env.py calls fileConfig()

        def test_caplog_sees_the_app_after_the_template_build(pg, caplog):
            with caplog.at_level(logging.INFO):
                app_log.info("order placed")
            assert caplog.messages == ["order placed"]
        """
    )
    alembic_project.runpytest().assert_outcomes(passed=1)


def test_missing_config_file_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"alembic:nowhere/alembic.ini.*is not a file"):
        load("alembic:nowhere/alembic.ini", tmp_path)


# -- the fingerprint ----------------------------------------------------------------------------


def fingerprint_of(root: Path) -> str:
    source = load("alembic:alembic.ini", root)
    assert isinstance(source, AlembicMigrations)
    return source.fingerprint()


def test_fingerprint_does_not_depend_on_where_the_project_is_or_its_url(tmp_path: Path) -> None:
    here = write_project(tmp_path / "here")
    there = tmp_path / "there"
    shutil.copytree(here, there)
    (there / "alembic" / "env.py").write_text((here / "alembic" / "env.py").read_text())
    ini = there / "alembic.ini"
    ini.write_text(ini.read_text().replace("nobody@localhost", "someone@elsewhere"))

    assert fingerprint_of(here) == fingerprint_of(there)


@pytest.mark.parametrize(
    "change",
    ["edit a revision", "add a revision", "edit env.py", "add a helper", "change an option"],
)
def test_fingerprint_changes_with_anything_that_shapes_the_schema(
    tmp_path: Path, change: str
) -> None:
    root = write_project(tmp_path)
    before = fingerprint_of(root)
    migrations = root / "alembic"
    if change == "edit a revision":
        revision = migrations / "versions" / "0003_add_user_names.py"
        revision.write_text(revision.read_text().replace("sa.Text", "sa.String(80)"))
    elif change == "add a revision":
        (migrations / "versions" / "0004_nothing.py").write_text(
            'revision = "0004"\ndown_revision = "0003"\n'
            "def upgrade(): pass\ndef downgrade(): pass\n"
        )
    elif change == "edit env.py":
        (migrations / "env.py").write_text((migrations / "env.py").read_text() + "\n# edited\n")
    elif change == "add a helper":
        (migrations / "helpers.sql").write_text("CREATE FUNCTION f() RETURNS int AS 'SELECT 1';")
    else:
        ini = root / "alembic.ini"
        ini.write_text(ini.read_text().replace("[alembic]", "[alembic]\nversion_table = v"))

    assert fingerprint_of(root) != before


def test_pyproject_toml_beside_the_config_file_is_read_as_the_alembic_command_would(
    tmp_path: Path,
) -> None:
    root = write_project(tmp_path)
    ini = root / "alembic.ini"
    ini.write_text(ini.read_text().replace("script_location = alembic\n", ""))
    (root / "pyproject.toml").write_text('[tool.alembic]\nscript_location = "%(here)s/alembic"\n')
    before = fingerprint_of(root)
    revision = root / "alembic" / "versions" / "0003_add_user_names.py"
    revision.write_text(revision.read_text().replace("sa.Text", "sa.String(80)"))

    assert fingerprint_of(root) != before


def test_unreadable_alembic_configuration_is_a_configuration_error(tmp_path: Path) -> None:
    root = write_project(tmp_path)
    shutil.rmtree(root / "alembic")

    with pytest.raises(ConfigurationError, match=r"Alembic migrations of alembic.ini: .*Path"):
        fingerprint_of(root)


# -- the ready check ----------------------------------------------------------------------------


def test_ready_check_passes_on_good_migrations(alembic_project: pytest.Pytester) -> None:
    alembic_project.makepyfile(
        test_check=CHECK_SUITE
        + """
def test_with_the_models_given(pg_url):
    import models
    check_migrations(pg_url, "alembic.ini", metadata=models.Base.metadata)
"""
    )
    alembic_project.runpytest().assert_outcomes(passed=2)


@ONE_PROVIDER
def test_ready_check_passes_on_a_database_built_some_other_way(
    user_project: pytest.Pytester,
) -> None:
    write_project(user_project.path)  # the template comes from migrations/*.sql, not Alembic
    user_project.makepyfile(test_check=CHECK_SUITE)
    user_project.runpytest().assert_outcomes(passed=1)


@ONE_PROVIDER
def test_ready_check_names_a_downgrade_that_leaves_a_type_behind(
    alembic_project: pytest.Pytester,
) -> None:
    revision = revision_file(alembic_project, "0002_create_orders.py")
    revision.write_text(revision.read_text().replace('op.execute("DROP TYPE order_status")', ""))
    alembic_project.makepyfile(test_check=CHECK_SUITE)

    result = alembic_project.runpytest()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   *MigrationCheckError: downgrade of alembic revision 0002 (create orders) "
            "does not undo its upgrade.",
            "E *Left behind:",
            "E *    type public.order_status enum ('new', 'paid')",
            "E *Fix its downgrade().",
        ]
    )
    assert "site-packages" not in result.stdout.str()


@ONE_PROVIDER
def test_ready_check_names_the_revision_whose_downgrade_fails(
    alembic_project: pytest.Pytester,
) -> None:
    revision = revision_file(alembic_project, "0003_add_user_names.py")
    revision.write_text(revision.read_text().replace('"users", "name"', '"users", "nmae"'))
    alembic_project.makepyfile(test_check=CHECK_SUITE)

    result = alembic_project.runpytest()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   *MigrationCheckError: downgrade of alembic revision 0003 (add user names), "
            "alembic/versions/0003_add_user_names.py, line 13: "
            'column "nmae" of relation "users" does not exist (PostgreSQL)'
        ]
    )


@ONE_PROVIDER
def test_ready_check_shows_what_a_revision_would_need_for_the_models_to_match(
    alembic_project: pytest.Pytester,
) -> None:
    alembic_project.makepyfile(test_check=CHECK_SUITE)
    models = alembic_project.path / "models.py"
    models.write_text(
        models.read_text().replace(
            "    name: Mapped[str | None] = mapped_column(Text)\n",
            "    name: Mapped[str | None] = mapped_column(Text)\n"
            "    nickname: Mapped[str | None] = mapped_column(Text)\n",
        )
    )

    result = alembic_project.runpytest()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   *MigrationCheckError: the models and the migrated schema differ; "
            "a new revision would need:",
            "E *    op.add_column('users', sa.Column('nickname', sa.Text(), nullable=True))",
            "E *Write it (alembic revision --autogenerate), or fix the models.",
        ]
    )


@ONE_PROVIDER
def test_ready_check_runs_an_async_env_py_from_an_async_test(
    alembic_project: pytest.Pytester,
) -> None:
    write_project(alembic_project.path, env_py=ASYNC_ENV_PY)
    alembic_project.makepyfile(
        """
        import pytest
        from unmocked.integrations.alembic_check import check_migrations

        @pytest.mark.asyncio
        async def test_migrations_are_ready(pg_url):
            check_migrations(pg_url, "alembic.ini")
        """
    )
    alembic_project.runpytest().assert_outcomes(passed=1)


@ONE_PROVIDER
def test_ready_check_refuses_a_database_unmocked_did_not_create(
    alembic_project: pytest.Pytester,
) -> None:
    alembic_project.makepyfile(
        """
        from unmocked.integrations.alembic_check import check_migrations

        def test_on_the_admin_database(pg_server):
            check_migrations(pg_server.url, "alembic.ini")
        """
    )
    result = alembic_project.runpytest()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E   *check_migrations needs the URL of a database unmocked created for this run*"]
    )
