"""``module:attribute`` migrations: a SQLAlchemy ``MetaData`` (``create_all``) or a callable.

The fingerprint of a ``MetaData`` is every statement ``create_all`` would run on PostgreSQL, taken
from a dry run (enum types, sequences, comments and the DDL of event listeners included), so any
change to a model that changes the schema rebuilds the template, wherever the model lives. A
callable's fingerprint is the source of the module that defines it; a callable may also carry an
``unmocked_fingerprint`` attribute (a string, or a function returning one) when its schema depends
on more than that file.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
import sys
import sysconfig
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
    except Exception as error:
        if isinstance(error, ModuleNotFoundError) and error.name in _parents(module_name):
            raise ConfigurationError(
                f"unmocked_migrations = {spec!r}: cannot import {module_name!r} ({error}). "
                f"Check the module name; it is imported with {root_dir} on sys.path."
            ) from None
        # The module was found, and its own code failed (a dependency it lacks included).
        raise MigrationError(
            f"unmocked_migrations = {spec!r}: importing {module_name} failed"
            f"{_innermost_user_frame(error)}: {_error_text(error)}. Fix the module and run "
            "again; nothing was cached."
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
        """A digest of every statement ``create_all`` would run on PostgreSQL.

        Taken from a dry run of ``create_all`` (SQLAlchemy's mock connection), so that enum
        types, sequences, comments and the DDL of event listeners count, not only the tables.
        """
        import sqlalchemy

        _check_foreign_keys(self.spec, self.metadata)
        try:
            try:
                return digest(b"sqlalchemy-create-all", *_create_all_statements(self.metadata))
            except Exception:
                # A listener that needs a live connection (it reads a result) cannot run dry;
                # the schema's own DDL and the listeners' source code stand in for what it runs.
                return digest(b"sqlalchemy-schema", *_schema_statements(self.metadata))
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise MigrationError(
                f"{self.spec}: SQLAlchemy cannot write the schema's DDL for PostgreSQL: "
                f"{error} (SQLAlchemy). Fix the model and run again; nothing was cached."
            ) from None

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
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise MigrationError(
                f"{self.spec}: create_all failed: {redact(str(error)).strip()} (SQLAlchemy). "
                "Fix the model and run again; nothing was cached."
            ) from None
        finally:
            engine.dispose()


def _check_foreign_keys(spec: str, metadata: Any) -> None:
    """Raise MigrationError for the first foreign key that points at nothing in ``metadata``.

    SQLAlchemy resolves foreign keys lazily and raises from deep inside ``create_all``; a model
    module that forgot to import the module defining the referred table is the usual cause.
    """
    import sqlalchemy

    for table in metadata.tables.values():
        for foreign_key in sorted(table.foreign_keys, key=lambda key: str(key.parent.name)):
            where = f"{table.fullname}.{foreign_key.parent.name}"
            target = foreign_key.target_fullname
            try:
                foreign_key.column  # noqa: B018 (resolving it is the check)
            except sqlalchemy.exc.NoReferencedColumnError as error:
                raise MigrationError(
                    f"{spec}: the foreign key of {where} points at {target}, but table "
                    f"{error.table_name} has no column {error.column_name} (SQLAlchemy). Fix "
                    "the ForeignKey; nothing was cached."
                ) from None
            except sqlalchemy.exc.NoReferenceError as error:
                raise MigrationError(
                    f"{spec}: the foreign key of {where} points at {target}, but the MetaData "
                    f"has no table {error.table_name} (SQLAlchemy). Define that table on the "
                    "same MetaData (import the module that defines it from the one "
                    "unmocked_migrations names), or fix the ForeignKey; nothing was cached."
                ) from None


def _create_all_statements(metadata: Any) -> list[bytes]:
    """The statements ``metadata.create_all()`` runs on PostgreSQL, recorded without a server.

    SQLAlchemy emits a table's indexes (and constraint comments) from a set, in an order that
    changes from one process to the next; each run of them is sorted so the digest does not.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.engine.mock import MockConnection

    dialect = make_url("postgresql+psycopg://").get_dialect()()
    recorded: list[tuple[str, bytes]] = []

    def record(statement: Any, parameters: Any = None) -> None:
        recorded.append((type(statement).__name__, _statement_text(statement, parameters, dialect)))

    class DryRun(MockConnection):
        """The mock connection, plus ``exec_driver_sql`` that listeners often call."""

        def exec_driver_sql(self, statement: str, parameters: Any = None, *_: Any) -> None:
            record(statement, parameters)

    metadata.create_all(DryRun(dialect, record))
    statements: list[bytes] = []
    for kind, run in itertools.groupby(recorded, key=lambda item: item[0]):
        texts = [text for _, text in run]
        statements += sorted(texts) if kind in ("CreateIndex", "SetConstraintComment") else texts
    return statements


def _statement_text(statement: Any, parameters: Any, dialect: Any) -> bytes:
    """A statement as PostgreSQL would receive it, with its parameters."""
    if isinstance(statement, str):
        text = statement
    else:
        compiled = statement.compile(dialect=dialect)
        text = str(compiled).strip()
        bound = getattr(compiled, "params", None)
        if bound:
            text += f" -- {sorted(bound.items())!r}"
    if parameters:
        text += f" -- {parameters!r}"
    return text.encode()


def _schema_statements(metadata: Any) -> list[bytes]:
    """Each table's DDL, column types, indexes and comments, and the source of every listener
    on the metadata and its tables: a stand-in for the statements when ``create_all`` cannot run
    dry."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateSequence, CreateTable

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    parts = [_listeners_text(metadata)]
    sequences = getattr(metadata, "_sequences", {}).values()  # SQLAlchemy's own record of them
    for sequence in sorted(sequences, key=lambda sequence: str(sequence.name)):
        parts.append(str(CreateSequence(sequence).compile(dialect=dialect)))
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)))
        parts += [f"{column.name}: {column.type!r} -- {column.comment}" for column in table.c]
        parts.append(f"{table.name} -- {table.comment}")
        parts += sorted(str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes)
        parts.append(_listeners_text(table))
    return [part.encode() for part in parts]


def _listeners_text(target: Any) -> str:
    """What ``target``'s create listeners run: a DDL's statement, else a function's source."""
    texts: list[str] = []
    for event in ("before_create", "after_create"):
        for listener in getattr(target.dispatch, event):
            statement = getattr(listener, "statement", None)
            if isinstance(statement, str):
                texts.append(statement)
                continue
            function = getattr(listener, "func", listener)  # a functools.partial's
            owner = getattr(function, "__self__", None)  # an Enum creating its type, say
            try:
                texts.append(inspect.getsource(function))
            except (OSError, TypeError):
                texts.append(getattr(function, "__qualname__", type(function).__name__))
            if owner is not None:
                texts.append(repr(owner))
    return "\n".join(texts)


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
                f"{self.spec} failed{where}: {_error_text(error)}. "
                "Fix it and run again; nothing was cached."
            ) from error


def _parents(module_name: str) -> set[str]:
    """``{"a", "a.b", "a.b.c"}`` for ``a.b.c``: the modules importing it imports first."""
    parts = module_name.split(".")
    return {".".join(parts[: length + 1]) for length in range(len(parts))}


def _error_text(error: BaseException) -> str:
    """``ZeroDivisionError: division by zero``, without a password."""
    message = error.msg if isinstance(error, SyntaxError) else str(error)
    return f"{type(error).__name__}: {redact(message).strip()}"


def _innermost_user_frame(error: BaseException) -> str:
    """`` at path/file.py, line N`` for the deepest frame outside libraries, if there is one.

    Libraries are site-packages, the standard library (``importlib``'s frames around an import
    included) and unmocked itself. A syntax error is where Python says it is.
    """
    if isinstance(error, SyntaxError) and error.filename:
        return f" at {error.filename}, line {error.lineno}"
    ours = str(Path(__file__).resolve().parent.parent)
    stdlib = {sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib")}
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if "site-packages" not in frame.filename
        and not frame.filename.startswith("<")
        and not str(Path(frame.filename).resolve()).startswith(ours)
        and not any(frame.filename.startswith(folder + os.sep) for folder in stdlib)
    ]
    if not frames:
        return ""
    return f" at {frames[-1].filename}, line {frames[-1].lineno}"
