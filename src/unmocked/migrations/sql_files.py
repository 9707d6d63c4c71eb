"""A folder of ``.sql`` files, applied in file-name order (``001_init.sql``, ``002_users.sql``...).

Each file runs as one script, so it may hold many statements, functions with ``$$`` bodies and
``BEGIN ATOMIC`` blocks. When PostgreSQL rejects a file, the error names the file, the line inside
it and PostgreSQL's own message.

What the folder holds is checked when it is loaded, so that no input is silently left out:

1. the files directly in the folder whose name ends in ``.sql``, in any case (``002_Fix.SQL``),
   are the migrations;
2. a folder with none is an error: the template would be an empty database, which a project
   asks for by leaving ``unmocked_migrations`` empty, not by naming a folder;
3. ``.sql`` files in subfolders are named in a warning and not applied: subfolders often hold
   down or rollback scripts and seeds, and no name order spans folders.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import psycopg

from unmocked.errors import ConfigurationError, MigrationError, UnmockedWarning
from unmocked.migrations import created_extensions, digest, postgres_message, shown_path
from unmocked.migrations.sql_statements import code_start, line_of_offset, split_statements


def load_sql_files(spec: str, folder: Path, root_dir: Path) -> SqlFiles:
    """``folder`` as a source, after checking that it holds migrations (see the module's steps).

    ``spec`` is the ``unmocked_migrations`` value, for the messages.
    """
    source = SqlFiles(folder, root_dir)
    shown = shown_path(folder, root_dir)
    nested = [shown_path(path, root_dir) for path in _sql_files_in_subfolders(folder)]
    if not source.files():
        entries = sorted(path.name + ("/" if path.is_dir() else "") for path in folder.iterdir())
        holds = f"it holds {_listed(entries)}" if entries else "it is empty"
        unapplied = f"; its subfolders hold {_listed(nested)}, not applied" if nested else ""
        raise ConfigurationError(
            f"unmocked_migrations = {spec!r}: {shown} holds no .sql file ({holds}{unapplied}), "
            "so the template would be an empty database. Put the migrations there, point "
            "unmocked_migrations at the folder that holds them, or leave it empty for an empty "
            "database."
        )
    if nested:
        message = (
            f"unmocked_migrations = {spec!r}: {len(nested)} .sql file"
            f"{'s' if len(nested) > 1 else ''} in subfolders "
            f"{'are' if len(nested) > 1 else 'is'} not applied: {_listed(nested)}. Only the .sql "
            f"files directly in {shown} are, in file-name order; move the ones that are "
            "migrations there."
        )
        try:
            # Said to be from the folder: the line of unmocked that noticed would tell nothing.
            warnings.warn_explicit(message, UnmockedWarning, str(folder), 0)
        except UnmockedWarning:  # -W error::unmocked.UnmockedWarning
            raise ConfigurationError(message) from None
    return source


def _sql_files_in_subfolders(folder: Path) -> list[Path]:
    """The ``.sql`` files below ``folder``'s subfolders, hidden ones (``.git``, ``.venv``) left
    out: a folder that is the project's root must not cost a walk through its virtualenv."""
    found: list[Path] = []
    for parent, subfolders, names in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        if Path(parent) != folder:
            found += [Path(parent, name) for name in names if _is_sql_file(Path(parent, name))]
    return sorted(found)


def _is_sql_file(path: Path) -> bool:
    return path.suffix.lower() == ".sql" and path.is_file()


def _listed(names: Sequence[str], at_most: int = 5) -> str:
    """``a, b, c`` or, past ``at_most`` names, ``a, b, c, d, e and 3 more``."""
    if len(names) <= at_most:
        return ", ".join(names)
    return f"{', '.join(names[:at_most])} and {len(names) - at_most} more"


class SqlFiles:
    """The ``.sql`` files directly inside one folder."""

    def __init__(self, folder: Path, root_dir: Path) -> None:
        self.folder = folder
        self.root_dir = root_dir
        self.current_step: str | None = None
        """The file being applied, for the progress lines of :mod:`unmocked.templates`."""

    def files(self) -> list[Path]:
        """The migrations in the order they run: ``.sql`` (in any case) files, by name."""
        return sorted(path for path in self.folder.iterdir() if _is_sql_file(path))

    def describe(self) -> str:
        return f"{len(self.files())} SQL files in {shown_path(self.folder, self.root_dir)}"

    def fingerprint(self) -> str:
        parts: list[bytes] = []
        for path in self.files():
            parts += [path.name.encode(), path.read_bytes()]
        return digest(b"sql-files", *parts)

    def extensions_created(self) -> list[str]:
        """The extensions the files' ``CREATE EXTENSION`` statements create, in order."""
        texts = (path.read_bytes().decode("utf-8", errors="replace") for path in self.files())
        return list(dict.fromkeys(name for text in texts for name in created_extensions(text)))

    def apply(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for path in self.files():
                self.current_step = shown_path(path, self.root_dir)
                try:
                    self._apply_file(conn, path)
                finally:
                    self.current_step = None

    def _apply_file(self, conn: psycopg.Connection[tuple[object, ...]], path: Path) -> None:
        script = self._read(path)
        try:
            # No parameters: psycopg sends the simple query protocol, which runs every statement
            # of the file in one implicit transaction, so a failing file leaves nothing behind.
            conn.execute(script.encode())
        except psycopg.Error as error:
            line = self._failing_line(conn, script, error)
            where = f"{shown_path(path, self.root_dir)}, line {line}"
            raise MigrationError(
                f"{where}: {postgres_message(error)} (PostgreSQL). "
                "Fix the file and run again; nothing was cached."
            ) from None

    def _read(self, path: Path) -> str:
        """The file's text: UTF-8, as PostgreSQL's own tools expect, a byte order mark dropped."""
        try:
            return path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = error.object[: error.start].count(b"\n") + 1
            raise MigrationError(
                f"{shown_path(path, self.root_dir)}, line {line}: byte "
                f"0x{error.object[error.start]:02x} is not UTF-8, the encoding unmocked reads "
                ".sql files in. Save the file as UTF-8 (iconv -f latin1 -t utf-8 converts a "
                "Latin-1 file) and run again; nothing was cached."
            ) from None

    def _failing_line(
        self, conn: psycopg.Connection[tuple[object, ...]], script: str, error: psycopg.Error
    ) -> int:
        """The line PostgreSQL points at; else the first line of the statement that fails alone.

        Errors raised while executing (a violated constraint, a missing function at run time)
        carry no position, so the file is replayed statement by statement inside a transaction
        that is rolled back, until one fails.
        """
        position = error.diag.statement_position
        if position:
            return line_of_offset(script, int(position) - 1)
        statements = split_statements(script)
        try:
            with conn.transaction(force_rollback=True):
                for offset, statement in statements:
                    try:
                        with conn.transaction():
                            conn.execute(statement.encode())
                    except psycopg.Error as replayed:
                        inner = replayed.diag.statement_position
                        start = offset + (int(inner) - 1 if inner else code_start(statement))
                        return line_of_offset(script, start)
        except psycopg.Error:
            pass
        return 1
