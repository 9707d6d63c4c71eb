"""asyncpg's hooks: the public methods of its connections and prepared statements that run a
statement, each counted once per execution.

1. ``Connection``: ``execute``, ``fetch``, ``fetchrow``, ``fetchval``, ``executemany``,
   ``fetchmany``, ``cursor`` (noted when made) and the ``copy_*`` methods (noted as the ``COPY``
   they send). A pool's connections are these: its proxies look the method up at each call.
2. ``PreparedStatement``: ``fetch``, ``fetchrow``, ``fetchval``, ``executemany``, ``fetchmany``
   and ``cursor``. ``prepare()`` only plans: SQLAlchemy's dialect prepares each statement, then
   runs it with ``fetch``, which is what counts. ``explain()`` runs through ``fetchval``.
3. asyncpg calls its public methods itself for transactions (``BEGIN``, ``COMMIT``, savepoints),
   resets, ``LISTEN`` and a copy's parameters: a call from its own modules is not noted, but from
   its pool and prepared statements, which call them for the user. Type introspection runs below
   the public methods and is never seen.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg
from asyncpg import connection, prepared_stmt

from unmocked.checks.drivers._hooks import (
    Many,
    Sent,
    SentOf,
    argument,
    at_call,
    copy_statement,
    hook,
    timed_async,
)

_ASYNCPG = os.path.dirname(os.path.abspath(asyncpg.__file__)) + os.sep
# Its modules that call the public methods for the user.
_FOR_THE_USER = frozenset({"pool.py", "prepared_stmt.py"})


def install() -> None:
    conn = connection.Connection
    for name in ("execute", "fetch", "fetchrow", "fetchval"):
        hook(conn, name, timed_async, _query_sent, own=_own)
    hook(conn, "copy_from_query", timed_async, _copy_query_sent, own=_own)
    for name in ("executemany", "fetchmany"):
        hook(conn, name, timed_async, _many_sent, Many(1, "args"), _own)
    for name, direction in (
        ("copy_from_table", "TO STDOUT"),
        ("copy_to_table", "FROM STDIN"),
        ("copy_records_to_table", "FROM STDIN"),
    ):
        hook(conn, name, timed_async, _copy_sent(direction), own=_own)
    hook(conn, "cursor", at_call, _query_sent, own=_own)

    statement = prepared_stmt.PreparedStatement
    for name in ("fetch", "fetchrow", "fetchval"):
        hook(statement, name, timed_async, _prepared_sent)
    for name in ("executemany", "fetchmany"):
        hook(statement, name, timed_async, _prepared_many_sent, Many(0, "args"))
    hook(statement, "cursor", at_call, _prepared_sent)


def _own(path: str) -> bool:
    return path.startswith(_ASYNCPG) and os.path.basename(path) not in _FOR_THE_USER


def _query_sent(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent | None:
    query = argument(args, kwargs, 0, "query")
    if query.strip() == ";":  # SQLAlchemy's ping, when its frames do not say so
        return None
    return Sent(query, args[1:] or None, conn._params.database, "$1")


def _many_sent(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent:
    query = argument(args, kwargs, 0, "command") or kwargs.get("query")
    return Sent(str(query), argument(args, kwargs, 1, "args"), conn._params.database, "$1")


def _copy_query_sent(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent:
    query = argument(args, kwargs, 0, "query")
    return Sent(f"COPY ({query}) TO STDOUT", args[1:] or None, conn._params.database, "$1")


def _copy_sent(direction: str) -> SentOf:
    def sent(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent:
        table = argument(args, kwargs, 0, "table_name")
        text = copy_statement(table, kwargs.get("columns"), direction, kwargs.get("schema_name"))
        return Sent(text, None, conn._params.database)

    return sent


def _prepared_sent(statement: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent:
    conn = statement._connection
    return Sent(statement.get_query(), args or None, conn._params.database, "$1")


def _prepared_many_sent(statement: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent:
    conn = statement._connection
    params = argument(args, kwargs, 0, "args")
    return Sent(statement.get_query(), params, conn._params.database, "$1")
