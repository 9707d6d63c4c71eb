"""Extensions in the template: ``unmocked_extensions`` created before the migrations run, and any
the server lacks named with where to get it.

Many schemas assume an extension exists (``citext`` columns, ``pg_trgm`` indexes) because the
production database was set up by hand; creating it in the template first lets such migrations run
unchanged. The extension names are part of the fingerprint, so adding one builds a new template.

When a ``CREATE EXTENSION`` fails because the server has no such extension (SQLSTATE 0A000, or
58P01 before PostgreSQL 15), here or in any source's migrations:

1. the failure is found in the error's chain (PostgreSQL's own error, under the source's
   :class:`MigrationError` and whatever the framework wrapped it in);
2. the source's message is kept up to PostgreSQL's words, so its file, line or revision stays;
3. what follows says which server lacks it, what each installation here has and how to get it
   (:func:`unmocked.servers.extensions.why_unavailable`), instead of "fix the file".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import psycopg
from psycopg import sql

from unmocked.errors import MigrationError
from unmocked.migrations import MigrationSource, digest, extensions_needed, postgres_message
from unmocked.settings import Settings

# PostgreSQL's words for an extension it has no control file for: 15 and later, then before 15.
_UNAVAILABLE = (
    re.compile(r'extension "(?P<name>[^"]+)" is not available'),
    re.compile(r'could not open extension control file "[^"]*/(?P<name>[^/"]+)\.control"'),
)


class WithExtensions:
    """``source``, applied after ``CREATE EXTENSION IF NOT EXISTS`` for each extension; a missing
    extension, there or in the source, is explained for the run's ``settings``."""

    def __init__(
        self, extensions: Sequence[str], source: MigrationSource, settings: Settings | None = None
    ) -> None:
        self.extensions = tuple(extensions)
        self.source = source
        self.settings = settings or Settings(extensions=self.extensions)

    def describe(self) -> str:
        if not self.extensions:
            return self.source.describe()
        return f"extensions {', '.join(self.extensions)}, then {self.source.describe()}"

    def fingerprint(self) -> str:
        if not self.extensions:
            return self.source.fingerprint()
        return digest(
            b"extensions",
            *(name.encode() for name in self.extensions),
            self.source.fingerprint().encode(),
        )

    def apply(self, url: str) -> None:
        try:
            self._create_extensions(url)
            self.source.apply(url)
        except MigrationError as error:
            explained = self._explained(error, url)
            if explained is None:
                raise
            raise MigrationError(explained) from None

    def _create_extensions(self, url: str) -> None:
        if not self.extensions:
            return
        with psycopg.connect(url, autocommit=True) as conn:
            for name in self.extensions:
                try:
                    conn.execute(
                        sql.SQL("CREATE EXTENSION IF NOT EXISTS {} CASCADE").format(
                            sql.Identifier(name)
                        )
                    )
                except psycopg.Error as error:
                    raise MigrationError(
                        f"unmocked_extensions: CREATE EXTENSION {name} failed: "
                        f"{postgres_message(error)} (PostgreSQL). Check the name in "
                        "unmocked_extensions; nothing was cached."
                    ) from None

    def _explained(self, error: MigrationError, url: str) -> str | None:
        """``error``'s message with what to do about the extension it lacks; None when it is
        not about an extension the server does not have."""
        found = unavailable_extension(error)
        if found is None:
            return None
        name, postgres_error = found
        message = str(error)
        words = postgres_message(postgres_error)
        end = message.find(words)
        where = message[: end + len(words)] if end >= 0 else message.rstrip(". ")
        from unmocked.servers.extensions import why_unavailable

        needs = [*extensions_needed(self.settings), *_created_by_source(self.source)]
        why = why_unavailable(name, needs, self.settings, _server_version(url))
        return f"{where} (PostgreSQL). {why} Nothing was cached."


def unavailable_extension(error: BaseException) -> tuple[str, psycopg.Error] | None:
    """The extension PostgreSQL had no control file for, and its error, if ``error`` comes from
    one: looked for in its causes, contexts and the DBAPI errors SQLAlchemy and Django wrap."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, psycopg.Error) and current.sqlstate in ("0A000", "58P01"):
            for pattern in _UNAVAILABLE:
                matched = pattern.search(postgres_message(current))
                if matched:
                    return matched["name"], current
        original = getattr(current, "orig", None)
        pending += [
            current.__cause__,
            current.__context__,
            original if isinstance(original, BaseException) else None,
        ]
    return None


def _created_by_source(source: MigrationSource) -> list[str]:
    """What a source that can say it (SQL files, Alembic) creates, for a framework's own source
    chosen after the server started (Django's), which :func:`extensions_needed` does not read."""
    created = getattr(source, "extensions_created", None)
    return list(created()) if callable(created) else []


def _server_version(url: str) -> str | None:
    """The server's version (``18.6``), for the message; None when it does not answer now."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]).split()[0] if row else None
