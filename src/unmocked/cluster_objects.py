"""What a server holds once for all its databases: roles, databases, tablespaces, replication slots,
and the settings of the whole server, of roles and of databases.

Tests and suites create such objects and settings, and nothing inside one database undoes them.
Two parts of unmocked look at what appeared while they were away, and both read it the same way:

1. :func:`snapshot` reads every such object in one round trip, as ``(kind, name)`` pairs; a setting
   is named by the statement that made it (``("setting", "ALTER ROLE app SET work_mem=64MB")``,
   see :mod:`unmocked.servers.known_state`). ``ALTER SYSTEM``'s entries cost a parse of the
   configuration files, so a snapshot given the one before reads them again only when
   ``postgresql.auto.conf`` changed (superusers only: others cannot read them);
2. :meth:`Snapshot.since` gives what exists now and did not then;
3. the caller decides what to do with it: ``pg_url`` names the objects and settings a test left in a
   warning (:mod:`unmocked.fresh`), ``unmocked run`` drops what a suite left on a server unmocked
   started or lists it on one given by URL (:mod:`unmocked.export.leftovers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from unmocked.ownership import PREFIX, AdminConnection
from unmocked.servers import known_state

_OURS = PREFIX.replace("_", "\\_") + "%"
_OBJECTS = f"""
SELECT 'role', rolname::text FROM pg_roles
UNION ALL SELECT 'database', datname::text FROM pg_database
UNION ALL SELECT 'tablespace', spcname::text FROM pg_tablespace
UNION ALL SELECT 'replication slot', slot_name::text FROM pg_replication_slots
UNION ALL SELECT 'setting', made_by FROM ({known_state.SETTINGS_MADE}) settings
 WHERE database IS NULL OR database NOT LIKE '{_OURS}'
UNION ALL SELECT 'setting', lost FROM ({known_state.ADMIN_ACCESS_LOST}) AS attributes (lost)
"""
# The settings of our own databases are left out: pg_url puts its database's back, and other runs
# and xdist workers have theirs.
_WITH_ALTER_SYSTEM_FILE = (
    f"{_OBJECTS} UNION ALL SELECT 'settings file', ({known_state.ALTER_SYSTEM_FILE})"
)


@dataclass(frozen=True)
class Snapshot:
    """The server-wide objects at one moment, as ``(kind, name)``: ``("role", "app")``."""

    objects: frozenset[tuple[str, str]]

    def since(self, before: Snapshot) -> Snapshot:
        """What this snapshot holds that ``before`` did not."""
        return Snapshot(self.objects - before.objects)

    def named(self, kind: str) -> frozenset[str]:
        """The names of one kind: ``role``, ``database``, ``tablespace``, ``replication slot``,
        ``setting``."""
        return frozenset(name for found, name in self.objects if found == kind)

    def without(self, *kinds: str) -> Snapshot:
        """This snapshot without the objects of ``kinds``."""
        return Snapshot(frozenset(found for found in self.objects if found[0] not in kinds))

    def described(self) -> list[str]:
        """``["database shop", "role app"]``: one phrase per object, sorted, for people
        (settings are their statement, ``settings file`` marks are left out)."""
        return sorted(
            name if kind == "setting" else f"{kind} {name}"
            for kind, name in self.objects
            if kind != "settings file"
        )


def snapshot(conn: AdminConnection, before: Snapshot | None = None) -> Snapshot:
    """Every role, database, tablespace, replication slot and setting of the server behind
    ``conn``; ``ALTER SYSTEM``'s entries as ``before`` had them unless their file changed."""
    if not known_state.is_superuser(conn):
        return _read(conn, _OBJECTS)
    try:
        found = _read(conn, _WITH_ALTER_SYSTEM_FILE)
    except psycopg.errors.InsufficientPrivilege:
        return _read(conn, _OBJECTS)  # a test took superuser from the role
    if before is not None and found.named("settings file") == before.named("settings file"):
        alter_system = {entry for entry in before.objects if entry[1].startswith("ALTER SYSTEM ")}
    else:
        rows = conn.execute(known_state.ALTER_SYSTEM_MADE).fetchall()
        alter_system = {("setting", str(made_by)) for made_by, _name in rows}
    return Snapshot(found.objects | alter_system)


def _read(conn: AdminConnection, query: str) -> Snapshot:
    rows = conn.execute(query).fetchall()
    return Snapshot(frozenset((str(kind), str(name)) for kind, name in rows if name is not None))
