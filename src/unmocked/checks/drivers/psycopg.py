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
    argument,
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
    query = argument(args, kwargs, 0, "query")
    if isinstance(query, bytes):
        text = query.decode("utf-8", "replace")
    elif isinstance(query, sql.Composable):
        text = query.as_string(cursor)
    else:
        text = str(query)
    params = argument(args, kwargs, 1, "params")
    if params is None:
        params = kwargs.get("params_seq")
    db = cursor.connection.pgconn.db
    return Sent(text, params, db.decode("utf-8", "replace") if db else "")
