"""What every driver's hooks are made of: a wrapper that notes what a method sends, with the line
of the code that called it.

1. While nobody listens, the wrapper calls the method after one check of a global.
2. Otherwise it skips calls the driver makes on its own behalf (``own``, asked of the caller's
   file), lists an ``executemany``'s parameter sets (they may be an iterator), asks the driver's
   ``sent`` what the call sends, takes the caller's line, times the call and notes it.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from unmocked.checks import recording


class Sent(NamedTuple):
    """What one call sends: its text, its parameters and the database it goes to."""

    sql: str
    params: Any
    database: str
    placeholders: recording.Placeholders = "%s"


SentOf = Callable[[Any, tuple[Any, ...], dict[str, Any]], Sent | None]
"""``sent(self, args, kwargs)``: what a call of the hooked method sends, or None for nothing to
note."""

Own = Callable[[str], bool]
"""Whether a call from this file is the driver's own (its transactions, resets, listeners)."""


class Many(NamedTuple):
    """Where an ``executemany``-like method takes its parameter sets."""

    position: int
    keyword: str


Wrapper = Callable[..., Callable[..., Any]]
"""``wrapper(method, sent, many=None, own=None)``: the method, hooked."""


def timed(
    method: Callable[..., Any], sent: SentOf, many: Many | None = None, own: Own | None = None
) -> Callable[..., Any]:
    @functools.wraps(method)
    def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not recording.anyone_listens() or (own and own(sys._getframe(1).f_code.co_filename)):
            return method(self, *args, **kwargs)
        line = recording.caller_line()
        count = None
        if many is not None:
            args, kwargs, count = _listed(args, kwargs, many)
        what = sent(self, args, kwargs)
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            if what is not None:
                _note(what, time.perf_counter() - started, line, count)

    return recorded


def timed_async(
    method: Callable[..., Any], sent: SentOf, many: Many | None = None, own: Own | None = None
) -> Callable[..., Any]:
    @functools.wraps(method)
    async def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        # A coroutine's caller is the frame that awaits it.
        if not recording.anyone_listens() or (own and own(sys._getframe(1).f_code.co_filename)):
            return await method(self, *args, **kwargs)
        line = recording.caller_line()
        count = None
        if many is not None:
            args, kwargs, count = _listed(args, kwargs, many)
        what = sent(self, args, kwargs)
        started = time.perf_counter()
        try:
            return await method(self, *args, **kwargs)
        finally:
            if what is not None:
                _note(what, time.perf_counter() - started, line, count)

    return recorded


def at_call(
    method: Callable[..., Any], sent: SentOf, many: Many | None = None, own: Own | None = None
) -> Callable[..., Any]:
    """For what sends its statement as it is entered or iterated (a copy, a stream, a cursor):
    noted when called, without a time."""

    @functools.wraps(method)
    def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if recording.anyone_listens() and not (own and own(sys._getframe(1).f_code.co_filename)):
            args, kwargs, count = _listed(args, kwargs, many)
            what = sent(self, args, kwargs)
            if what is not None:
                _note(what, 0.0, recording.caller_line(), count)
        return method(self, *args, **kwargs)

    return recorded


def hook(
    cls: type[Any],
    name: str,
    wrapper: Wrapper,
    sent: SentOf,
    many: Many | None = None,
    own: Own | None = None,
) -> None:
    """Replace ``cls.name`` by ``wrapper`` around it; nothing when this release lacks it (asyncpg's
    ``fetchmany`` came in 0.30)."""
    method = getattr(cls, name, None)
    if method is not None:
        setattr(cls, name, wrapper(method, sent, many, own))


def argument(args: tuple[Any, ...], kwargs: dict[str, Any], position: int, keyword: str) -> Any:
    """An argument given by position or by keyword; None when not given."""
    return args[position] if len(args) > position else kwargs.get(keyword)


def copy_statement(
    table: str, columns: Sequence[str] | None, direction: str, schema: str | None = None
) -> str:
    """The text of the COPY a driver sends for a table (``direction``: ``FROM STDIN`` or ``TO
    STDOUT``), for the drivers whose copy methods take a table rather than a statement."""
    name = f"{schema}.{table}" if schema else table
    listed = f" ({', '.join(columns)})" if columns else ""
    return f"COPY {name}{listed} {direction}"


def _listed(
    args: tuple[Any, ...], kwargs: dict[str, Any], many: Many | None
) -> tuple[tuple[Any, ...], dict[str, Any], int | None]:
    """The call's arguments with its parameter sets in a list, and how many there are."""
    if many is None:
        return args, kwargs, None
    if len(args) > many.position:
        sets = list(args[many.position])
        return (*args[: many.position], sets, *args[many.position + 1 :]), kwargs, len(sets)
    if many.keyword in kwargs:
        sets = list(kwargs[many.keyword])
        return args, {**kwargs, many.keyword: sets}, len(sets)
    return args, kwargs, None


def _note(what: Sent, seconds: float, line: recording.Line | None, many: int | None) -> None:
    recording.note(
        what.sql,
        what.params,
        what.database,
        seconds,
        line,
        many=many,
        placeholders=what.placeholders,
    )
