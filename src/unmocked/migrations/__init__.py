"""What builds the schema of a template database.

Each source gives :meth:`MigrationSource.fingerprint` (a digest of its inputs, so a changed input is
a new template name and never a stale cache hit) and :meth:`MigrationSource.apply` (run it against
an empty database). :func:`load` turns the ``unmocked_migrations`` setting into a source, and
:func:`extensions_needed` reads, from the same setting, which extensions the build will create.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from importlib.machinery import PathFinder
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

    def extensions_created(self) -> list[str]:
        return []


def shown_path(path: Path, base: Path) -> str:
    """``path`` as a person would write it: relative to ``base`` when it lies inside."""
    return os.path.relpath(path, base) if path.is_relative_to(base) else str(path)


def postgres_message(error: psycopg.Error) -> str:
    """PostgreSQL's primary message, without psycopg's LINE/caret decoration."""
    primary = error.diag.message_primary
    return primary if primary else str(error).splitlines()[0]


# CREATE EXTENSION [IF NOT EXISTS] name | "name", also inside a Python string (\"name\"); a name
# made at run time ("{name}", %s) is left out, as nothing here can say what it will be.
_CREATE_EXTENSION = re.compile(
    r"\bCREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r'(?:\\?"([A-Za-z0-9_.-]+)\\?"|(?!IF\s+NOT\b)([A-Za-z_][A-Za-z0-9_]*)\b(?![{%]))',
    re.IGNORECASE,
)
# Django's operations that create an extension (django.contrib.postgres, pgvector's).
_DJANGO_OPERATION = re.compile(
    r'\bCreateExtension\(\s*(?:name\s*=\s*)?["\']([A-Za-z0-9_.-]+)["\']'
    r"|\b(HStore|Trigram|CIText|BtreeGist|BtreeGin|Crypto|Unaccent|Bloom|Vector)Extension\(\s*\)"
)
_DJANGO_EXTENSIONS = {
    "HStore": "hstore",
    "Trigram": "pg_trgm",
    "CIText": "citext",
    "BtreeGist": "btree_gist",
    "BtreeGin": "btree_gin",
    "Crypto": "pgcrypto",
    "Unaccent": "unaccent",
    "Bloom": "bloom",
    "Vector": "vector",
}
# SQL comments, and Python's on lines of their own: a commented-out statement creates nothing.
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*|^[ \t]*#[^\n]*", re.DOTALL | re.MULTILINE)


def created_extensions(text: str) -> list[str]:
    """The extensions ``text`` (SQL, or Python holding SQL or Django operations) creates, in order.

    Unquoted names are folded to lower case, as PostgreSQL does; quoted ones are kept as written.
    """
    # Every start asks this of the migrations' files; most create no extension, and stripping
    # the comments of a large schema takes milliseconds where this look takes microseconds.
    if "extension" not in text.lower():
        return []
    text = _COMMENTS.sub(" ", text)
    found: list[tuple[int, str]] = []
    for match in _CREATE_EXTENSION.finditer(text):
        quoted, bare = match.groups()
        found.append((match.start(), quoted or bare.lower()))
    for match in _DJANGO_OPERATION.finditer(text):
        named, operation = match.groups()
        found.append((match.start(), named or _DJANGO_EXTENSIONS[operation]))
    return list(dict.fromkeys(name for _, name in sorted(found)))


def extensions_needed(settings: Settings) -> list[str]:
    """The extensions a template built from the settings creates: ``unmocked_extensions``, then
    those the files of ``unmocked_migrations`` create, in order.

    Read from the files, never by running or importing them: :func:`unmocked.servers.start` asks
    at every start, before it picks the binaries. Django's migrations, chosen later by the
    plugin, are not read here. Without ``unmocked_migrations``, an ``alembic.ini`` in the project's
    folder is read: a suite under ``unmocked run`` often runs Alembic on the database itself.
    """
    return list(dict.fromkeys([*settings.extensions, *_created_by(settings)]))


def _created_by(settings: Settings) -> list[str]:
    spec, root_dir = settings.migrations.strip(), settings.root_dir
    if not spec and (root_dir / "alembic.ini").is_file():
        spec = "alembic:alembic.ini"
    try:
        if not spec:
            return []
        if spec.startswith("alembic:"):
            from unmocked.migrations.alembic import PREFIX, AlembicMigrations

            config_file = (root_dir / spec[len(PREFIX) :].strip()).resolve()
            if not config_file.is_file() or importlib.util.find_spec("alembic") is None:
                return []
            return AlembicMigrations(config_file, root_dir).extensions_created()
        path = (root_dir / spec).resolve()
        if path.is_dir():
            from unmocked.migrations.sql_files import SqlFiles

            return SqlFiles(path, root_dir).extensions_created()
        module_file = _module_file(spec.partition(":")[0], root_dir) if ":" in spec else None
        return created_extensions(module_file.read_text(errors="replace")) if module_file else []
    except Exception:
        # A source that cannot be read now is the build's to report, with its file and line; a
        # guess at the server must never fail the run first.
        return []


def _module_file(module_name: str, root_dir: Path) -> Path | None:
    """The ``.py`` file of ``module_name`` (with ``root_dir`` first on the path), found without
    importing it or its packages: a callable's module, whose text holds its SQL."""
    search = [str(root_dir), *sys.path]
    spec = None
    parts = module_name.split(".")
    for length in range(1, len(parts) + 1):
        spec = PathFinder.find_spec(".".join(parts[:length]), search)
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


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
    ``unmocked_migrations`` setting, after the ``unmocked_extensions`` are created; an extension
    the server does not have is explained, whichever source creates it (see
    :class:`~unmocked.migrations.extensions.WithExtensions`).

    Without extensions the fingerprint is the source's own, so cached templates stay valid.
    """
    source = chosen or load(settings.migrations, settings.root_dir)
    from unmocked.migrations.extensions import WithExtensions

    return WithExtensions(settings.extensions, source, settings)
