"""``module:attribute`` migrations: a SQLAlchemy ``MetaData`` (``create_all``) or a callable.

The fingerprint of a ``MetaData`` is the DDL it would emit for PostgreSQL, so any change to a model
that changes the schema rebuilds the template, wherever the model lives. A callable's fingerprint is
the source of the module that defines it; a callable may also carry an ``unmocked_fingerprint``
attribute (a string, or a function returning one) when its schema depends on more than that file.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unmocked.errors import ConfigurationError, MigrationError
from unmocked.migrations import MigrationSource, digest
from unmocked.urls import redact, with_driver


def load_python_object(spec: str, root_dir: Path) -> MigrationSource:
    """Import ``module:attribute`` (with ``root_dir`` importable) and wrap what it names."""
    module_name, _, attribute = spec.partition(":")
    if str(root_dir) not in sys.path:
        sys.path.insert(0, str(root_dir))
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"unmocked_migrations = {spec!r}: cannot import {module_name!r} ({error}). "
            f"Check the module name; it is imported with {root_dir} on sys.path."
        ) from None
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise ConfigurationError(
                f"unmocked_migrations = {spec!r}: {module_name} has no attribute {attribute!r}."
            ) from None
    if _is_sqlalchemy_metadata(target):
        return SqlAlchemyMetadata(spec, target)
    if callable(target):
        return PythonCallable(spec, target)
    raise ConfigurationError(
        f"unmocked_migrations = {spec!r} names a {type(target).__name__}, which is neither a "
        "SQLAlchemy MetaData nor a callable taking the database URL."
    )


def _is_sqlalchemy_metadata(target: object) -> bool:
    sqlalchemy = sys.modules.get("sqlalchemy")
    return sqlalchemy is not None and isinstance(target, sqlalchemy.MetaData)


class SqlAlchemyMetadata:
    """``metadata.create_all()`` on the template database."""

    def __init__(self, spec: str, metadata: Any) -> None:
        self.spec = spec
        self.metadata = metadata

    def describe(self) -> str:
        return f"SQLAlchemy metadata {self.spec} ({len(self.metadata.tables)} tables)"

    def fingerprint(self) -> str:
        from sqlalchemy.dialects import postgresql
        from sqlalchemy.schema import CreateIndex, CreateTable

        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        ddl: list[bytes] = []
        for table in self.metadata.sorted_tables:
            ddl.append(str(CreateTable(table).compile(dialect=dialect)).encode())
            ddl += [
                str(CreateIndex(index).compile(dialect=dialect)).encode()
                for index in sorted(table.indexes, key=lambda index: str(index.name))
            ]
        return digest(b"sqlalchemy-metadata", *ddl)

    def apply(self, url: str) -> None:
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            with_driver(url, "psycopg"), poolclass=sqlalchemy.NullPool
        )
        try:
            self.metadata.create_all(engine)
        except sqlalchemy.exc.DBAPIError as error:
            raise MigrationError(
                f"{self.spec}: create_all failed: {redact(str(error.orig)).strip()} (PostgreSQL). "
                "Fix the model and run again; nothing was cached."
            ) from None
        finally:
            engine.dispose()


class PythonCallable:
    """A function that builds the schema, called with the template database's URL."""

    def __init__(self, spec: str, function: Callable[[str], object]) -> None:
        self.spec = spec
        self.function = function

    def describe(self) -> str:
        return f"callable {self.spec}"

    def fingerprint(self) -> str:
        declared = getattr(self.function, "unmocked_fingerprint", None)
        if callable(declared):
            declared = declared()
        if declared is not None:
            return digest(b"callable-declared", str(declared).encode())
        module = inspect.getmodule(self.function)
        source_file = inspect.getsourcefile(module) if module else None
        source = Path(source_file).read_bytes() if source_file else self.spec.encode()
        return digest(b"callable", self.spec.encode(), source)

    def apply(self, url: str) -> None:
        try:
            self.function(url)
        except MigrationError:
            raise
        except Exception as error:
            where = _innermost_user_frame(error)
            raise MigrationError(
                f"{self.spec} failed{where}: {type(error).__name__}: {redact(str(error)).strip()}. "
                "Fix it and run again; nothing was cached."
            ) from error


def _innermost_user_frame(error: BaseException) -> str:
    """`` at path/file.py, line N`` for the deepest frame outside libraries, if there is one."""
    ours = str(Path(__file__).resolve().parent.parent)
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if "site-packages" not in frame.filename
        and not str(Path(frame.filename).resolve()).startswith(ours)
    ]
    if not frames:
        return ""
    return f" at {frames[-1].filename}, line {frames[-1].lineno}"
