"""Extensions created in the template before the migrations run (``unmocked_extensions``).

Many schemas assume an extension exists (``citext`` columns, ``pg_trgm`` indexes) because the
production database was set up by hand; creating it in the template first lets such migrations run
unchanged. The extension names are part of the fingerprint, so adding one builds a new template.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from unmocked.errors import MigrationError
from unmocked.migrations import MigrationSource, digest, postgres_message


class WithExtensions:
    """``source``, applied after ``CREATE EXTENSION IF NOT EXISTS`` for each extension."""

    def __init__(self, extensions: Sequence[str], source: MigrationSource) -> None:
        self.extensions = tuple(extensions)
        self.source = source

    def describe(self) -> str:
        return f"extensions {', '.join(self.extensions)}, then {self.source.describe()}"

    def fingerprint(self) -> str:
        return digest(
            b"extensions",
            *(name.encode() for name in self.extensions),
            self.source.fingerprint().encode(),
        )

    def apply(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for name in self.extensions:
                try:
                    conn.execute(
                        sql.SQL("CREATE EXTENSION IF NOT EXISTS {} CASCADE").format(
                            sql.Identifier(name)
                        )
                    )
                except psycopg.Error as error:
                    raise MigrationError(_advice(name, error)) from None
        self.source.apply(url)


def _advice(name: str, error: psycopg.Error) -> str:
    message = f"unmocked_extensions: CREATE EXTENSION {name} failed: {postgres_message(error)}."
    if error.sqlstate in ("0A000", "58P01"):  # not available: no control file on the server
        return (
            f"{message} This server does not have the {name} extension installed. The embedded "
            "server has PostgreSQL's contrib extensions (pg_trgm, citext, hstore, ltree, ...) "
            "and pgvector (vector); for others, install the extension's package for the "
            "machine's PostgreSQL (for example apt-get install postgresql-16-postgis-3) and "
            "use UNMOCKED_PROVIDER=local, or set UNMOCKED_DATABASE_URL to a server that has it."
        )
    return f"{message} Check the name in unmocked_extensions; nothing was cached."
