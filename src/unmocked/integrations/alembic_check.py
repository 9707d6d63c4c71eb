"""Are the Alembic migrations ready to ship? One call from one test answers it on a real database.

:func:`check_migrations`, given a database of unmocked's (the ``pg_url`` fixture gives one), makes
an empty database beside it and

1. walks the "stairway": for each revision, base first, upgrade to it, downgrade one step, expect
   exactly the schema of before the upgrade, and upgrade again (a downgrade that forgets a type or
   an index fails here, not in production on the day it is needed);
2. compares the migrated schema with the models, as ``alembic check`` does.

A failure names the revision, the step and PostgreSQL's message, or lists what a downgrade left
behind, or shows the operations a new revision would need for the models to match.
"""

from __future__ import annotations

import os
import secrets
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from unmocked import ownership
from unmocked.errors import MigrationCheckError
from unmocked.migrations.alembic import (
    AlembicCommands,
    AlembicFailure,
    VersionTable,
    describe_revision,
)
from unmocked.ownership import Owner
from unmocked.templates import clone_strategy
from unmocked.urls import database_of, with_database, with_driver

if TYPE_CHECKING:
    from alembic.operations.ops import UpgradeOps
    from alembic.script import Script
    from sqlalchemy import MetaData

# Every object a migration can create, one readable line each, with the table it belongs to (so
# the version table's own objects can be left out). Objects of extensions count as the extension.
SCHEMA_OBJECTS = """
WITH ours AS (
  SELECT oid, nspname FROM pg_namespace
  WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\\_%'
), plain AS (
  SELECT c.oid, c.relname, c.relkind, ours.nspname
  FROM pg_class c JOIN ours ON ours.oid = c.relnamespace
  WHERE NOT EXISTS (SELECT FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
)
SELECT format('schema %I', nspname), nspname, NULL FROM ours WHERE nspname <> 'public'
UNION ALL
SELECT format('%s %I.%I', CASE relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table'
  WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
  WHEN 'f' THEN 'foreign table' WHEN 'c' THEN 'type' END, nspname, relname), nspname, relname
FROM plain WHERE relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
UNION ALL
SELECT format('column %I.%I.%I %s%s%s', nspname, relname, a.attname,
  format_type(a.atttypid, a.atttypmod), CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
  ' default ' || pg_get_expr(d.adbin, d.adrelid)), nspname, relname
FROM plain JOIN pg_attribute a ON a.attrelid = plain.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
UNION ALL
SELECT format('index %I.%I: %s', nspname, relname, pg_get_indexdef(i.indexrelid)), nspname,
  (SELECT relname FROM pg_class WHERE oid = i.indrelid)
FROM plain JOIN pg_index i ON i.indexrelid = plain.oid
UNION ALL
SELECT format('constraint %I on %I.%I: %s', co.conname, nspname, relname,
  pg_get_constraintdef(co.oid)), nspname, relname
FROM plain JOIN pg_constraint co ON co.conrelid = plain.oid
UNION ALL
SELECT format('trigger %I on %I.%I: %s', t.tgname, nspname, relname, pg_get_triggerdef(t.oid)),
  nspname, relname
FROM plain JOIN pg_trigger t ON t.tgrelid = plain.oid AND NOT t.tgisinternal
UNION ALL
SELECT format('type %I.%I %s', ours.nspname, t.typname, CASE t.typtype
  WHEN 'e' THEN 'enum (' || (
    SELECT string_agg(quote_literal(enumlabel), ', ' ORDER BY enumsortorder)
    FROM pg_enum WHERE enumtypid = t.oid) || ')'
  WHEN 'd' THEN 'domain over ' || format_type(t.typbasetype, t.typtypmod)
  ELSE 'range' END), ours.nspname, NULL
FROM pg_type t JOIN ours ON ours.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'r')
  AND NOT EXISTS (SELECT FROM pg_depend d
    WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT format('function %I.%I(%s) returns %s, body md5 %s', ours.nspname, p.proname,
  pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid),
  left(md5(coalesce(p.prosrc, '')), 8)), ours.nspname, NULL
FROM pg_proc p JOIN ours ON ours.oid = p.pronamespace
WHERE NOT EXISTS (SELECT FROM pg_depend d
    WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT format('extension %I', extname), NULL, NULL FROM pg_extension WHERE extname <> 'plpgsql'
"""

Connection = psycopg.Connection[tuple[object, ...]]


def check_migrations(
    url: str,
    config_file: str | os.PathLike[str] = "alembic.ini",
    *,
    metadata: MetaData | None = None,
    compare_models: bool = True,
) -> None:
    """Check the Alembic project of ``config_file`` on ``url``'s server; raise if it is not ready.

    ``url`` names a database unmocked created (``pg_url`` gives one); it is left untouched: the
    check runs in an empty database of its own beside it, owned by the same run and dropped after.
    ``config_file`` is relative to the current directory, as for the ``alembic`` command. The
    migrated schema is compared with ``metadata`` when given, else with the ``target_metadata``
    env.py gives Alembic (with env.py's own autogenerate options, as ``alembic check`` does);
    ``compare_models=False`` skips that, for projects without models.
    """
    __tracebackhide__ = True  # pytest shows the message, not unmocked's frames
    try:
        with _empty_database_beside(url) as empty_url:
            _check(empty_url, Path(config_file).resolve(), metadata, compare_models)
    except MigrationCheckError as failure:
        raise failure.with_traceback(None) from None


def _check(url: str, config_file: Path, metadata: MetaData | None, compare_models: bool) -> None:
    with (
        AlembicCommands(config_file, url, Path.cwd()) as alembic,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        try:
            version_table = alembic.version_table()
        except AlembicFailure as failure:
            raise MigrationCheckError(f"running env.py: {failure}") from None
        for revision in alembic.revisions():
            _climb_one_stair(alembic, conn, version_table, revision)
        if metadata is not None:
            _compare_with_models(url, version_table, metadata)
        elif compare_models:
            _compare_with_env_py_models(alembic)


@contextmanager
def _empty_database_beside(url: str) -> Iterator[str]:
    """A new database from ``template0`` owned by the run that owns ``url``'s; dropped after.

    Owned by that (live) run, it is safe from other runs' clean-up while the check runs, and is
    collected like the run's other databases should the process die.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        owner = ownership.owner_of(conn, database_of(url))
        if owner is None or owner.run is None:
            raise MigrationCheckError(
                f"check_migrations needs the URL of a database unmocked created for this run, "
                f"and {database_of(url)!r} is not one. Pass the pg_url fixture's URL."
            )
        name = f"{ownership.PREFIX}{owner.run}_check_{secrets.token_hex(3)}"
        ownership.create_database(
            conn, name, Owner("fresh", run=owner.run), "template0", clone_strategy(conn)
        )
        try:
            yield with_database(url, name)
        finally:
            ownership.drop_database(conn, name)


def _climb_one_stair(
    alembic: AlembicCommands, conn: Connection, version_table: VersionTable, revision: Script
) -> None:
    """Upgrade to ``revision``, downgrade one step (expect the schema of before), upgrade again."""
    before = _schema_objects(conn, version_table)
    _step(alembic.upgrade, revision.revision, revision, "upgrade to {}")
    _step(alembic.downgrade, _one_step_down(revision), revision, "downgrade of {}")
    after = _schema_objects(conn, version_table)
    if after != before:
        message = f"downgrade of {describe_revision(revision)} does not undo its upgrade."
        if after - before:
            message += f"\nLeft behind:{_listed(after - before)}"
        if before - after:
            message += f"\nGone, though there before the upgrade:{_listed(before - after)}"
        raise MigrationCheckError(message + "\nFix its downgrade().")
    _step(alembic.upgrade, revision.revision, revision, "upgrade to {} again, after its downgrade")


def _one_step_down(revision: Script) -> str:
    """The downgrade target that undoes just ``revision``, the head the stairway just reached.

    ``<revision>@-1`` walks one step down from the current head on ``revision``'s lineage, leaving
    other branches as they are. Alembic finds that walk ambiguous from a merge point; downgrading
    to one of a merge's parents undoes the merge alone and keeps both parents applied.
    """
    parents = revision.down_revision
    if isinstance(parents, (tuple, list)) and len(parents) > 1:
        return str(parents[0])
    return f"{revision.revision}@-1"


def _step(command: Callable[[str], None], target: str, revision: Script, what: str) -> None:
    try:
        command(target)
    except AlembicFailure as failure:
        raise MigrationCheckError(
            f"{what.format(failure.where(revision))}: {failure.reason}"
        ) from None


def _schema_objects(conn: Connection, version_table: VersionTable) -> frozenset[str]:
    """One line per object in the database, leaving out Alembic's version table."""
    version_schema, version_name = version_table
    rows = conn.execute(SCHEMA_OBJECTS).fetchall()
    return frozenset(
        str(description)
        for description, schema, table in rows
        if not (table == version_name and schema == (version_schema or "public"))
    )


def _listed(objects: frozenset[str], limit: int = 40) -> str:
    lines = sorted(objects)
    shown = "".join(f"\n    {line}" for line in lines[:limit])
    return shown + (f"\n    ... and {len(lines) - limit} more" if len(lines) > limit else "")


def _compare_with_models(url: str, version_table: VersionTable, metadata: MetaData) -> None:
    import sqlalchemy
    from alembic.autogenerate import produce_migrations
    from alembic.runtime.migration import MigrationContext

    version_schema, version_name = version_table
    engine = sqlalchemy.create_engine(with_driver(url, "psycopg"), poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "version_table": version_name,
                    "version_table_schema": version_schema,
                    "include_schemas": any(table.schema for table in metadata.tables.values()),
                },
            )
            upgrade_ops = produce_migrations(context, metadata).upgrade_ops
    finally:
        engine.dispose()
    if upgrade_ops is not None and not upgrade_ops.is_empty():
        raise MigrationCheckError(_models_differ([upgrade_ops]))


def _compare_with_env_py_models(alembic: AlembicCommands) -> None:
    from alembic import command
    from alembic.util import AutogenerateDiffsDetected

    try:
        alembic.run(command.check)
    except AlembicFailure as failure:
        detected = failure.__cause__
        if isinstance(detected, AutogenerateDiffsDetected):
            script = detected.revision_context.generated_revisions[-1]
            raise MigrationCheckError(_models_differ(script.upgrade_ops_list)) from None
        raise MigrationCheckError(
            f"comparing the models with the migrated schema (alembic check): {failure}. "
            "Pass the models as check_migrations(..., metadata=Base.metadata), set "
            "target_metadata in env.py, or pass compare_models=False if there are no models."
        ) from None


def _models_differ(upgrade_ops: list[UpgradeOps]) -> str:
    from alembic.autogenerate import render_python_code

    code = "\n".join(
        line
        for ops in upgrade_ops
        for line in render_python_code(ops).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return (
        "the models and the migrated schema differ; a new revision would need:\n"
        f"{textwrap.indent(textwrap.dedent(code), '    ')}\n"
        "Write it (alembic revision --autogenerate), or fix the models."
    )
