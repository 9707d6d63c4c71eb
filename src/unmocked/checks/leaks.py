"""Connections the code under test left open to its ``pg_url`` database, found as its test ends.

A connection never closed, an engine never disposed or a pool kept for the app's lifetime passes a
test and then exhausts ``max_connections``, or holds its locks while idle in a transaction, in a
longer suite or in production. The pool ends every session of a released database anyway (see
:mod:`unmocked.fresh.pool`), so the next test starts clean; this module says which there were:

1. :func:`look` is a ``DO`` statement that reads the sessions (``pg_stat_get_activity()``) on
   the database's OID, leaving out unmocked's own sessions (named by
   :mod:`unmocked.session_names`, such as the ``queries`` fixture's explaining connection) and
   the admin session itself;
2. a session its client closed a moment ago stays listed until its backend has exited (a few
   milliseconds): what the first look finds is looked at again on the server, every half
   millisecond for up to :data:`CLOSING_SECONDS`, and only what stays is kept, in the admin
   session's setting :data:`LEFT_SETTING`. The pool sends it in the same round trip as the
   release (:func:`found` reads the setting); :func:`sessions_left` is it alone. A clean test
   pays one look;
3. :func:`end` ends the sessions left on a database kept for a failed test (a released database's
   go with it);
4. :func:`report` says them in one paragraph (:func:`described`): the warning of
   ``unmocked_leaks = warn``, the :class:`~unmocked.errors.LeakError` of ``fail``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from unmocked.checks.shapes import shape
from unmocked.errors import LeakError, UnmockedWarning
from unmocked.ownership import AdminConnection, age_in_words
from unmocked.session_names import IS_OWN_SESSION

# How long a session found at the end of a test may take to go before it counts as left open: its
# backend exits a few milliseconds after the client closed it (4 ms at most over 200 closes on an
# idle machine), later on a loaded one. Only a test that really leaks waits this long.
CLOSING_SECONDS = 0.1

# Characters of the last statement shown per connection.
STATEMENT_CHARS = 60

LEFT_SETTING = "unmocked.sessions_left"
"""The admin session's setting where :func:`look` leaves what it found, as a JSON array."""

READ = sql.SQL(f"SELECT current_setting('{LEFT_SETTING}')")
"""What :func:`look` found, in the round trip after it: :func:`found` reads its one value."""

# Client backends only: autovacuum and parallel workers also connect to the database. Each
# session as [pid, application_name, state, seconds in that state, last statement], oldest first.
# pg_stat_get_activity, not the pg_stat_activity view, whose joins a DO block plans anew each
# time: half a millisecond a statement.
_LOOK = f"""
DECLARE
  found jsonb;
  closing timestamptz := clock_timestamp() + make_interval(secs => {{seconds}});
BEGIN
  SELECT coalesce(jsonb_agg(jsonb_build_array(
           pid, application_name, coalesce(state, ''),
           extract(epoch FROM clock_timestamp() - coalesce(state_change, backend_start))::float8,
           coalesce(query, '')) ORDER BY backend_start, pid), '[]')
    INTO found
    FROM pg_stat_get_activity(NULL)
   WHERE datid = {{oid}} AND pid <> pg_backend_pid() AND backend_type = 'client backend'
     AND NOT coalesce({IS_OWN_SESSION}, false);
  WHILE found <> '[]' AND clock_timestamp() < closing LOOP
    PERFORM pg_sleep(0.0005);
    PERFORM pg_stat_clear_snapshot();  -- else pg_stat_activity stays as this transaction saw it
    SELECT coalesce(jsonb_agg(session ORDER BY place), '[]') INTO found
      FROM jsonb_array_elements(found) WITH ORDINALITY AS seen (session, place)
     WHERE (session ->> 0)::int IN (SELECT pid FROM pg_stat_get_activity(NULL)
                                     WHERE datid = {{oid}});
  END LOOP;
  PERFORM set_config('{LEFT_SETTING}', found::text, false);
END
"""


@dataclass(frozen=True)
class LeftSession:
    """A session of the code under test still connected to its database as the test ended."""

    pid: int
    application_name: str
    state: str
    """``pg_stat_activity.state``: ``idle``, ``idle in transaction``, ``active``...; empty when
    the admin role may not see it."""
    seconds: float
    """How long it has been in that state."""
    statement: str
    """Its last statement (the one running, when ``active``), as the server shows it."""


def look(oid: int) -> sql.Composed:
    """The ``DO`` statement that finds the sessions of the code under test still connected to the
    database ``oid`` and waits for those on their way out (at most :data:`CLOSING_SECONDS`),
    leaving what stays in :data:`LEFT_SETTING` for :func:`found`."""
    body = _LOOK.format(seconds=CLOSING_SECONDS, oid=oid)
    return sql.SQL("DO {}").format(sql.Literal(body))


def found(setting: str | None) -> list[LeftSession]:
    """The sessions :func:`look` left in :data:`LEFT_SETTING` (its value: ``setting``)."""
    return [
        LeftSession(int(pid), str(name or ""), str(state), float(seconds), str(statement))
        for pid, name, state, seconds, statement in json.loads(setting or "[]")
    ]


def sessions_left(admin: AdminConnection, oid: int) -> list[LeftSession]:
    """The sessions of the code under test still connected to the database ``oid``, oldest
    first; those on their way out are waited for (at most :data:`CLOSING_SECONDS`)."""
    cursor = admin.execute(sql.SQL("{}; {}").format(look(oid), READ))
    cursor.nextset()
    row = cursor.fetchone()
    return found(str(row[0]) if row else None)


def end(admin: AdminConnection, sessions: Sequence[LeftSession]) -> None:
    """End ``sessions`` (without waiting for them to go)."""
    if sessions:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
            ([session.pid for session in sessions],),
        )


def report(sessions: Sequence[LeftSession], test_name: str, fail: bool) -> None:
    """Say :func:`described` in an :class:`~unmocked.errors.UnmockedWarning`, or with ``fail``
    raise it as a :class:`~unmocked.errors.LeakError`; for the end of a ``fresh_database`` block,
    whose caller the warning points at."""
    if fail:
        raise LeakError(described(sessions, test_name))
    warnings.warn(described(sessions, test_name), UnmockedWarning, stacklevel=4)


def described(sessions: Sequence[LeftSession], test_name: str) -> str:
    """One paragraph: which connections ``test_name`` left open, and what to do about them."""
    alike: dict[tuple[str, str, str], list[LeftSession]] = {}
    for session in sessions:
        key = (session.application_name, session.state, _shortened(session.statement))
        alike.setdefault(key, []).append(session)
    phrases = [
        (f"{len(group)} with " if len(group) > 1 else "")
        + _phrase(*key, max(session.seconds for session in group))
        for key, group in alike.items()
    ]
    shown = ", ".join(phrases[:5]) + (f", and {len(phrases) - 5} more" if len(phrases) > 5 else "")
    connections = "1 connection" if len(sessions) == 1 else f"{len(sessions)} connections"
    return (
        f"{test_name or 'a test'} left {connections} open to its database: {shown}. unmocked "
        "ended them, so the next test starts clean. Close what the test opens (with "
        "psycopg.connect(pg_url) as conn:), dispose an SQLAlchemy engine made per test "
        "(engine.dispose()), and close a pool the app keeps for its lifetime at the end of the "
        "test or give it NullPool in tests (see unmocked_leaks)."
    )


def _shortened(statement: str) -> str:
    """``statement`` without its values (see :func:`~unmocked.checks.shapes.shape`), cut short."""
    text = shape(statement)
    if len(text) > STATEMENT_CHARS:
        text = text[: STATEMENT_CHARS - 1].rstrip() + "…"
    return text


def _phrase(application_name: str, state: str, statement: str, seconds: float) -> str:
    """``application_name 'app' (idle in transaction for 1.2 s, since: UPDATE ...)``."""
    who = f"application_name {application_name!r}" if application_name else "no application_name"
    if seconds < 1:
        how_long = f"{seconds * 1000:.0f} ms"
    else:
        how_long = f"{seconds:.1f} s" if seconds < 60 else age_in_words(seconds)
    state_for = f"{state or 'state not visible to unmocked'} for {how_long}"
    if not statement:
        return f"{who} ({state_for})"
    return f"{who} ({state_for}, {'running' if state == 'active' else 'since'}: {statement})"
