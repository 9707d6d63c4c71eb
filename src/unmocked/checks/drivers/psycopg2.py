"""psycopg2's hooks: the cursors of the connections made once they are installed.

psycopg2's connection and cursor types are C, whose methods cannot be replaced, so each
connection and cursor is made of a recording subclass of the class it would have had:

1. ``psycopg2._connect``, which ``psycopg2.connect`` calls (so also SQLAlchemy's dialect, Django's
   backend and psycopg2's pools, however they imported ``connect``), makes each connection of a
   subclass of the ``connection_factory`` asked for (or psycopg2's ``connection``).
2. That subclass's ``cursor()`` sits last before psycopg2's own in the method order, so it sees
   the cursor class the caller's classes settled on (the ``cursor_factory`` given, else the
   connection's, such as ``RealDictCursor``, else psycopg2's ``cursor``) and makes the cursor of
   a subclass of it whose ``execute``, ``executemany``, ``callproc`` and ``copy_*`` note what
   they send. Each subclass is made once per class.
3. A connection made before the hooks were installed, or by a ``connection_factory`` that is not
   a class, is not recorded; nor a cursor made by a ``cursor_factory`` that is not a class.
"""

from __future__ import annotations

import functools
from typing import Any

import psycopg2
from psycopg2 import extensions

from unmocked.checks.drivers._hooks import Many, Sent, SentOf, argument, copy_statement, timed

_RECORDED = "_unmocked_recorded"


def install() -> None:
    connect = psycopg2._connect

    @functools.wraps(connect)
    def recorded_connect(
        dsn: Any, connection_factory: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        factory = connection_factory or extensions.connection
        return connect(dsn, _connection_class(factory), *args, **kwargs)

    psycopg2._connect = recorded_connect


class _RecordedCursors(extensions.connection):  # type: ignore[misc]
    """Last before psycopg2's ``connection``: its ``cursor()`` sees the factory settled on."""

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        # psycopg2's rule: the factory given, else the connection's, else its own cursor.
        if len(args) > 1:
            factory = args[1] or self.cursor_factory or extensions.cursor
            args = (args[0], _cursor_class(factory), *args[2:])
        else:
            factory = kwargs.get("cursor_factory") or self.cursor_factory or extensions.cursor
            kwargs["cursor_factory"] = _cursor_class(factory)
        return _connection_cursor(self, *args, **kwargs)  # super()'s, without its cost


_connection_cursor = extensions.connection.cursor
# By the class asked for: the class that records it (itself, when it records already or is not a
# class: a factory function's connections and cursors are not recorded).
_connection_classes: dict[Any, Any] = {}
_cursor_classes: dict[Any, Any] = {}


def _connection_class(base: Any) -> Any:
    recording = _connection_classes.get(base)
    if recording is None:
        if not isinstance(base, type) or getattr(base, _RECORDED, False):
            return base
        bases = (_RecordedCursors,) if base is extensions.connection else (base, _RecordedCursors)
        recording = type(base.__name__, bases, _namespace(base, {}))
        recording = _connection_classes.setdefault(base, recording)
    return recording


def _cursor_class(base: Any) -> Any:
    recording = _cursor_classes.get(base)
    if recording is None:
        if not isinstance(base, type) or getattr(base, _RECORDED, False):
            return base
        hooks = {name: timed(getattr(base, name), sent, many) for name, sent, many in _HOOKS}
        recording = type(base.__name__, (base,), _namespace(base, hooks))
        recording = _cursor_classes.setdefault(base, recording)
    return recording


def _namespace(base: type[Any], methods: dict[str, Any]) -> dict[str, Any]:
    """Named as ``base`` (its repr and type name stay the same), marked as recording."""
    return {
        **methods,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        _RECORDED: True,
    }


def _database(cursor: Any) -> str:
    return cursor.connection.info.dbname or ""


def _text(cursor: Any, query: Any) -> str:
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    if hasattr(query, "as_string"):  # psycopg2.sql
        return str(query.as_string(cursor))
    return str(query)


def _statement_sent(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent:
    query = argument(args, kwargs, 0, "query")
    params = argument(args, kwargs, 1, "vars")
    if params is None:
        params = kwargs.get("vars_list")
    return Sent(_text(cursor, query), params, _database(cursor))


def _procedure_sent(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent:
    name = argument(args, kwargs, 0, "procname")
    params = argument(args, kwargs, 1, "parameters")
    if isinstance(params, dict):
        listed = ", ".join(f"{key} := %({key})s" for key in params)
    else:
        listed = ", ".join(["%s"] * len(params or ()))
    return Sent(f"SELECT * FROM {name}({listed})", params, _database(cursor))


def _copy_expert_sent(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent:
    return Sent(_text(cursor, argument(args, kwargs, 0, "sql")), None, _database(cursor))


def _copy_sent(direction: str, columns_at: int) -> SentOf:
    def sent(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent:
        table = argument(args, kwargs, 1, "table")
        columns = argument(args, kwargs, columns_at, "columns")
        return Sent(copy_statement(table, columns, direction), None, _database(cursor))

    return sent


_HOOKS: list[tuple[str, SentOf, Many | None]] = [
    ("execute", _statement_sent, None),
    ("executemany", _statement_sent, Many(1, "vars_list")),
    ("callproc", _procedure_sent, None),
    ("copy_expert", _copy_expert_sent, None),
    ("copy_from", _copy_sent("FROM STDIN", 5), None),
    ("copy_to", _copy_sent("TO STDOUT", 4), None),
]
