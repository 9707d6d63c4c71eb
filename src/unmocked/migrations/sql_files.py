"""A folder of ``.sql`` files, applied in file-name order (``001_init.sql``, ``002_users.sql``...).

Each file runs as one script, so it may hold many statements, functions with ``$$`` bodies and
``BEGIN ATOMIC`` blocks. When PostgreSQL rejects a file, the error names the file, the line inside
it and PostgreSQL's own message.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from unmocked.errors import MigrationError
from unmocked.migrations import digest, postgres_message, shown_path
from unmocked.migrations.sql_statements import code_start, line_of_offset, split_statements


class SqlFiles:
    """The ``.sql`` files directly inside one folder."""

    def __init__(self, folder: Path, root_dir: Path) -> None:
        self.folder = folder
        self.root_dir = root_dir

    def files(self) -> list[Path]:
        return sorted(path for path in self.folder.glob("*.sql") if path.is_file())

    def describe(self) -> str:
        return f"{len(self.files())} SQL files in {shown_path(self.folder, self.root_dir)}"

    def fingerprint(self) -> str:
        parts: list[bytes] = []
        for path in self.files():
            parts += [path.name.encode(), path.read_bytes()]
        return digest(b"sql-files", *parts)

    def apply(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for path in self.files():
                self._apply_file(conn, path)

    def _apply_file(self, conn: psycopg.Connection[tuple[object, ...]], path: Path) -> None:
        script = path.read_text(encoding="utf-8")
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
