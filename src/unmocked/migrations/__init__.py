"""What builds the schema of a template database.

Each source gives :meth:`MigrationSource.fingerprint` (a digest of its inputs, so a changed input is
a new template name and never a stale cache hit) and :meth:`MigrationSource.apply` (run it against
an empty database). :func:`load` turns the ``unmocked_migrations`` setting into a source.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psycopg

from unmocked.errors import ConfigurationError

if TYPE_CHECKING:
    from unmocked.settings import Settings


class MigrationSource(Protocol):
    """Something that can build a schema into an empty database."""

    def describe(self) -> str:
        """A few words for people: ``3 SQL files in migrations/``."""
        ...

    def fingerprint(self) -> str:
        """A digest of every input that shapes the schema."""
        ...

    def apply(self, url: str) -> None:
        """Build the schema into the empty database at ``url``; raise MigrationError if it fails."""
        ...


class NoMigrations:
    """The empty schema: tests get a database with nothing in it."""

    def describe(self) -> str:
        return "no migrations"

    def fingerprint(self) -> str:
        return digest(b"empty")

    def apply(self, url: str) -> None:
        """Nothing to build."""


def shown_path(path: Path, base: Path) -> str:
    """``path`` as a person would write it: relative to ``base`` when it lies inside."""
    return os.path.relpath(path, base) if path.is_relative_to(base) else str(path)


def postgres_message(error: psycopg.Error) -> str:
    """PostgreSQL's primary message, without psycopg's LINE/caret decoration."""
    primary = error.diag.message_primary
    return primary if primary else str(error).splitlines()[0]


def digest(*parts: bytes) -> str:
    """A hex digest over ``parts``, each length-prefixed so that boundaries count too."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


def load(spec: str, root_dir: Path) -> MigrationSource:
    """Turn the ``unmocked_migrations`` setting into a source.

    ``""`` is an empty database; a path (relative to ``root_dir``) to a directory is a folder of
    ``.sql`` files; ``alembic:path/to/alembic.ini`` is an Alembic project; ``module:attribute`` is a
    SQLAlchemy ``MetaData`` or a callable.
    """
    spec = spec.strip()
    if not spec:
        return NoMigrations()
    if spec.startswith("alembic:"):
        from unmocked.migrations.alembic import load_alembic

        return load_alembic(spec, root_dir)
    path = (root_dir / spec).resolve()
    if path.is_dir():
        from unmocked.migrations.sql_files import load_sql_files

        return load_sql_files(spec, path, root_dir)
    if ":" in spec and not path.exists():
        from unmocked.migrations.python_object import load_python_object

        return load_python_object(spec, root_dir)
    raise ConfigurationError(
        f"unmocked_migrations = {spec!r}: {path} is not a directory of .sql files, and the "
        "value is not of the form module:attribute. Point it at your migrations folder, or at a "
        "SQLAlchemy MetaData or callable (for example myapp.models:Base.metadata)."
    )


def from_settings(settings: Settings, chosen: MigrationSource | None = None) -> MigrationSource:
    """What builds the template: ``chosen`` (a framework's own migrations) or the
    ``unmocked_migrations`` setting, after the ``unmocked_extensions`` are created.

    Without extensions the source is returned as it is, so its fingerprint (and cached templates)
    stay what they were.
    """
    source = chosen or load(settings.migrations, settings.root_dir)
    if not settings.extensions:
        return source
    from unmocked.migrations.extensions import WithExtensions

    return WithExtensions(settings.extensions, source)
