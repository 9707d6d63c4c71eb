"""psycopg 3's hooks (sync and asyncio): its cursors' ``execute``, ``executemany``, ``stream`` and
``copy``, and its server-side cursors' ``execute``.

Every path that sends SQL a caller wrote goes through one of them (``Connection.execute`` makes a
cursor; SQLAlchemy and Django call them too), and none of the statements psycopg or unmocked send
on their own (``BEGIN``, savepoints of ``transaction()``, the rollback fixtures' own) does.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from unmocked.checks.drivers._hooks import (
    Many,
    Sent,
    at_call,
    hook,
    timed,
    timed_async,
)

_MANY = Many(1, "params_seq")


def install() -> None:
    for cursors, wrapper in (
        ((psycopg.Cursor, psycopg.ServerCursor), timed),
        ((psycopg.AsyncCursor, psycopg.AsyncServerCursor), timed_async),
    ):
        for cursor in cursors:
            hook(cursor, "execute", wrapper, _sent)
        hook(cursors[0], "executemany", wrapper, _sent, _MANY)
        for name in ("copy", "stream"):
            hook(cursors[0], name, at_call, _sent)


def _sent(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sent:
    # Runs for every statement: arguments taken here rather than through _hooks.argument.
    query = args[0] if args else kwargs.get("query")
    if type(query) is str:  # the usual case, before the slower checks of an ABC
        text = query
    elif isinstance(query, bytes):
        text = query.decode("utf-8", "replace")
    elif isinstance(query, sql.Composable):
        text = query.as_string(cursor)
    else:
        text = str(query)
    params = args[1] if len(args) > 1 else kwargs.get("params")
    if params is None:
        params = kwargs.get("params_seq")
    db = cursor.connection.pgconn.db
    return Sent(text, params, db.decode("utf-8", "replace") if db else "")
