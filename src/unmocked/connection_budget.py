"""How many connections a run may use on its server, and waiting for one to come free.

A server shared by many CI jobs runs out of connections long before it runs out of anything else,
and a test that meets ``too many clients already`` says nothing of who holds them. So before
unmocked opens a connection of its own or hands a test a database, it checks that the run has
room for one more (:meth:`ConnectionBudget.wait_for_room`): within the server's limit for its
role (:func:`server_limit`), and within ``unmocked_max_connections`` when that is set. When there
is none, it waits (``unmocked_connection_wait`` seconds) for one to come free, then fails the test
in one line naming the limit and who holds the connections, by the application_names of
:mod:`unmocked.session_names` (runs by host and pid, plus how many others).

``unmocked_max_connections`` caps the run as a whole, its xdist workers together: every process of a
run holds, on its admin session (the lease's), the advisory lock of the run's group (the
controller's run id, :data:`GROUP_LOCK_CLASS`), so one query finds the run's processes and counts
their own sessions and every session connected to their databases. The check is a count, not a
reservation: two workers that look at once may both take the last slot, so the cap holds to within
one connection per worker at a moment when all of them start at once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from unmocked.errors import DatabaseError
from unmocked.ownership import PREFIX, AdminConnection, lock_key, lock_oid
from unmocked.servers.existing import refused_for_want_of_a_slot
from unmocked.session_names import IS_OWN_SESSION, SessionName

T = TypeVar("T")

# Held shared, keyed by the run's group, by the admin session of each of a run's processes.
GROUP_LOCK_CLASS = 0x756E6772  # "ungr"
# How often a waiting run looks again.
_POLL_SECONDS = 0.2
# A reading that left more than _SPARE connections free stands for _TRUSTED_FOR seconds: tests
# that start meanwhile open fewer than that between two looks, as far as tests seen go.
_SPARE = 4
_TRUSTED_FOR = 0.1

_PREFIX_PATTERN = PREFIX.replace("_", "\\_")

_LIMIT = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true)::int, 0),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       EXISTS (SELECT FROM pg_roles WHERE rolname = 'pg_use_reserved_connections'
                                      AND pg_has_role(oid, 'MEMBER'))
"""

# The client sessions on the server, and how many of them are the run's: its processes' own
# sessions (by application_name), and every session connected to one of their databases.
_IN_USE = f"""
WITH client AS (
  SELECT a.pid, a.datname, {IS_OWN_SESSION} AS own,
         split_part(a.application_name, ' ', 2) AS run,
         split_part(a.application_name, ' ', 3) || ' ' || split_part(a.application_name, ' ', 4)
           AS process
    FROM pg_stat_activity a WHERE a.backend_type = 'client backend'
), members AS (
  SELECT c.run, c.process FROM pg_locks l JOIN client c ON c.pid = l.pid
   WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.objsubid = 2
     AND l.granted AND c.own
)
SELECT count(*),
       count(*) FILTER (
         WHERE (own AND process IN (SELECT process FROM members))
            OR (datname LIKE '{_PREFIX_PATTERN}%%'
                AND substr(datname, {len(PREFIX) + 1}, 10) IN (SELECT run FROM members)))
  FROM client
"""


@dataclass(frozen=True)
class Limit:
    """How many client connections the server lets the admin's role have, in all."""

    slots: int
    words: str
    """How it comes about: ``max_connections 20 minus 3 reserved for superusers``."""


def server_limit(conn: AdminConnection) -> Limit:
    """The server's limit for ``conn``'s role: ``max_connections`` for a superuser; less
    ``superuser_reserved_connections`` for any other role, and on PostgreSQL 16 and later less
    ``reserved_connections`` too unless it is a member of ``pg_use_reserved_connections``."""
    row = conn.execute(_LIMIT).fetchone()
    assert row is not None
    most, for_superusers, reserved, superuser, may_use_reserved = row
    words = f"max_connections {most}"
    slots = int(str(most))
    if not superuser:
        slots -= int(str(for_superusers))
        words += f" minus {for_superusers} reserved for superusers"
        if reserved and not may_use_reserved:
            slots -= int(str(reserved))
            words += f" and {reserved} for pg_use_reserved_connections"
    return Limit(slots, words)


def holders(conn: AdminConnection, run_group: str) -> str:
    """Who holds the server's client connections, in words: ``this run 4, pid 999 on runner-9
    (ci) 13, 2 others``. Sessions connected to a run's database count as that run's process."""
    rows = conn.execute(
        "SELECT a.application_name, a.datname, l.objid IS NOT NULL FROM pg_stat_activity a "
        "LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted "
        "AND l.classid = %s AND l.objid = %s AND l.objsubid = 2 "
        "WHERE a.backend_type = 'client backend'",
        _group_lock(run_group),
    ).fetchall()
    names = [
        (SessionName.parse(str(app or "")), str(db or ""), bool(ours)) for app, db, ours in rows
    ]
    runs = {name.run: name for name, _db, _ours in names if name is not None and name.run}
    ours = {(n.pid, n.host) for n, _db, is_member in names if n is not None and is_member}
    counted: Counter[str] = Counter()
    for name, database, _member in names:
        if name is None and database.startswith(PREFIX):
            name = runs.get(database[len(PREFIX) : len(PREFIX) + 10])
        if name is None:
            counted["others"] += 1
        elif (name.pid, name.host) in ours:
            counted["this run"] += 1
        else:
            counted[f"pid {name.pid} on {name.host} ({name.user})"] += 1
    others = counted.pop("others", 0)
    listed = [f"{who} {count}" for who, count in counted.most_common()]
    return ", ".join([*listed, f"{others} other{'s' if others != 1 else ''}"])


class ConnectionBudget:
    """One process's view of its run's connections: room for one more, or a wait, or the line
    that says why there is none."""

    def __init__(self, run_group: str, most: int | None, wait: float) -> None:
        """``run_group``: the run id all the run's processes hold the group lock of; ``most``:
        ``unmocked_max_connections`` (None: the server's limit only); ``wait``: seconds to wait
        for a connection to come free."""
        self.run_group = run_group
        self.most = most
        self.wait = wait
        self._limit: Limit | None = None
        self._trusted_until = 0.0
        """Until when (monotonic) the last reading stands, for :meth:`wait_for_room`."""

    @property
    def lock(self) -> tuple[int, int]:
        """The advisory lock the admin session of each of the run's processes holds shared."""
        return GROUP_LOCK_CLASS, lock_key(self.run_group)

    def wait_for_room(
        self, conn: AdminConnection, what: str, free_own: Callable[[], None] = lambda: None
    ) -> None:
        """Return once the run may open one more connection; else call ``free_own`` (which
        closes the run's own sessions it can), wait for one to come free, and at the end of
        :attr:`wait` raise :class:`DatabaseError` in one line (``what``: the test or the work
        that needs it).

        One round trip, none while a reading less than :data:`_TRUSTED_FOR` seconds old left
        more than :data:`_SPARE` connections free: a rollback test costs no round trip of its
        own, and near the limit every start looks.
        """
        if self.has_room(conn):
            return
        deadline = time.monotonic() + self.wait
        freed = False
        while True:
            room, reason = self._room(conn)
            if room > 0:
                return
            if not freed:
                free_own()
                freed = True
                continue
            if time.monotonic() >= deadline:
                raise DatabaseError(self._no_room(conn, what, reason))
            time.sleep(_POLL_SECONDS)

    def has_room(self, conn: AdminConnection) -> bool:
        """Whether the run may open one more connection now; no round trip while a reading less
        than :data:`_TRUSTED_FOR` seconds old left more than :data:`_SPARE` connections free."""
        if self.room_to_spare():
            return True
        room, _why = self._room(conn)
        if room > _SPARE:
            self._trusted_until = time.monotonic() + _TRUSTED_FOR
        return room > 0

    def room_to_spare(self) -> bool:
        """Whether the last reading stands (see :meth:`has_room`): a session the run keeps open
        in the background meanwhile still leaves room for the next connection."""
        return time.monotonic() < self._trusted_until

    def connecting(
        self, connect: Callable[[], T], what: str, conn: AdminConnection | None = None
    ) -> T:
        """``connect()``, tried again while the server refuses it for want of a slot, for
        :attr:`wait` seconds; then the one line (naming the holders when ``conn``, an open
        admin connection, can read them)."""
        deadline = time.monotonic() + self.wait
        while True:
            try:
                return connect()
            except psycopg.OperationalError as error:
                if not refused_for_want_of_a_slot(error):
                    raise
                if time.monotonic() >= deadline:
                    raise DatabaseError(self._no_room(conn, what, None)) from None
            time.sleep(_POLL_SECONDS)

    def _room(self, conn: AdminConnection) -> tuple[int, str]:
        """How many more connections the run may open now, and when none, why."""
        if self._limit is None:
            self._limit = server_limit(conn)
        row = conn.execute(_IN_USE, _group_lock(self.run_group)).fetchone()
        assert row is not None
        in_use, of_run = int(str(row[0])), int(str(row[1]))
        room = self._limit.slots - in_use
        if room <= 0:
            return room, (
                f"all {self._limit.slots} connections the server allows are in use "
                f"({self._limit.words})"
            )
        if self.most is not None and of_run >= self.most:
            return (
                self.most - of_run,
                f"the run holds {of_run} connections, and unmocked_max_connections is {self.most}",
            )
        return room if self.most is None else min(room, self.most - of_run), ""

    def _no_room(self, conn: AdminConnection | None, what: str, reason: str | None) -> str:
        if reason is None:
            limit = f" ({self._limit.words})" if self._limit else ""
            reason = f"the server refuses new connections: all its slots are in use{limit}"
        held = f"; held by {holders(conn, self.run_group)}" if conn is not None else ""
        return (
            f"no connection free for {what or 'unmocked'} after {self.wait:g} s: {reason}{held}. "
            "Close connections, raise max_connections, or set unmocked_max_connections for the "
            "runs that share the server."
        )


def _group_lock(run_group: str) -> tuple[int, int]:
    """The group lock as pg_locks shows it."""
    return GROUP_LOCK_CLASS, lock_oid(run_group)
