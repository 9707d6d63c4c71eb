"""The hooks that hand the statements code sends to :mod:`unmocked.checks.recording`.

psycopg 3 (sync and asyncio) is hooked at its cursors' ``execute``, ``executemany``, ``stream`` and
``copy``, and its server-side cursors' ``execute``: every path that sends SQL a caller wrote goes
through one of them (``Connection.execute`` makes a cursor; SQLAlchemy and Django call them too),
and none of the statements psycopg or unmocked send on their own (``BEGIN``, savepoints of
``transaction()``, the rollback fixtures' own) does. The hooks are installed once per process, the
first time anything listens; while nobody listens each costs one function call and a check.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from unmocked.checks import recording

_installed = False


def install() -> None:
    """Hook the drivers that are importable; again is a no-op."""
    global _installed
    if _installed:
        return
    _installed = True
    hooks: list[tuple[type[Any], str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = [
        (psycopg.Cursor, "execute", _sync),
        (psycopg.ServerCursor, "execute", _sync),
        (psycopg.Cursor, "executemany", functools.partial(_sync, many=True)),
        (psycopg.Cursor, "copy", _at_call),
        (psycopg.Cursor, "stream", _at_call),
        (psycopg.AsyncCursor, "execute", _async),
        (psycopg.AsyncServerCursor, "execute", _async),
        (psycopg.AsyncCursor, "executemany", functools.partial(_async, many=True)),
        (psycopg.AsyncCursor, "copy", _at_call),
        (psycopg.AsyncCursor, "stream", _at_call),
    ]
    for cursor, name, hook in hooks:
        setattr(cursor, name, hook(getattr(cursor, name)))


def _note(
    cursor: Any,
    query: Any,
    params: Any,
    seconds: float,
    line: recording.Line | None,
    many: bool = False,
) -> None:
    if isinstance(query, bytes):
        text = query.decode("utf-8", "replace")
    elif isinstance(query, sql.Composable):
        text = query.as_string(cursor)
    else:
        text = str(query)
    db = cursor.connection.pgconn.db
    recording.note(
        text,
        params,
        db.decode("utf-8", "replace") if db else "",
        seconds,
        line,
        many=len(params) if many else None,
    )


def _sync(method: Callable[..., Any], many: bool = False) -> Callable[..., Any]:
    @functools.wraps(method)
    def recorded(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not recording.anyone_listens():
            return method(self, query, params, *args, **kwargs)
        line = recording.caller_line()
        if many:
            params = list(params)
        started = time.perf_counter()
        try:
            return method(self, query, params, *args, **kwargs)
        finally:
            _note(self, query, params, time.perf_counter() - started, line, many)

    return recorded


def _async(method: Callable[..., Any], many: bool = False) -> Callable[..., Any]:
    @functools.wraps(method)
    async def recorded(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not recording.anyone_listens():
            return await method(self, query, params, *args, **kwargs)
        line = recording.caller_line()
        if many:
            params = list(params)
        started = time.perf_counter()
        try:
            return await method(self, query, params, *args, **kwargs)
        finally:
            _note(self, query, params, time.perf_counter() - started, line, many)

    return recorded


def _at_call(method: Callable[..., Any]) -> Callable[..., Any]:
    """For what sends its statement as it is entered or iterated (``copy``, ``stream``): noted
    when called, without a time."""

    @functools.wraps(method)
    def recorded(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if recording.anyone_listens():
            _note(self, query, params, 0.0, recording.caller_line())
        return method(self, query, params, *args, **kwargs)

    return recorded
