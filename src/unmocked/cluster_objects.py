"""What a server holds once for all its databases: roles, databases, tablespaces, replication slots.

Tests and suites create such objects, and nothing inside one database undoes them. Two parts of
unmocked look at what appeared while they were away, and both read it the same way:

1. :func:`snapshot` reads every such object in one round trip, as ``(kind, name)`` pairs;
2. :meth:`Snapshot.since` gives what exists now and did not then;
3. the caller decides what to do with it: ``pg_url`` names the objects a test left in a warning
   (:mod:`unmocked.fresh`), ``unmocked run`` drops what a suite left on a server unmocked started
   or lists it on one given by URL (:mod:`unmocked.export.leftovers`).
"""

from __future__ import annotations

from dataclasses import dataclass

from unmocked.ownership import AdminConnection

_OBJECTS = """
SELECT 'role', rolname FROM pg_roles
UNION ALL SELECT 'database', datname FROM pg_database
UNION ALL SELECT 'tablespace', spcname FROM pg_tablespace
UNION ALL SELECT 'replication slot', slot_name FROM pg_replication_slots
"""


@dataclass(frozen=True)
class Snapshot:
    """The server-wide objects at one moment, as ``(kind, name)``: ``("role", "app")``."""

    objects: frozenset[tuple[str, str]]

    def since(self, before: Snapshot) -> Snapshot:
        """What this snapshot holds that ``before`` did not."""
        return Snapshot(self.objects - before.objects)

    def named(self, kind: str) -> frozenset[str]:
        """The names of one kind: ``role``, ``database``, ``tablespace``, ``replication slot``."""
        return frozenset(name for found, name in self.objects if found == kind)

    def described(self) -> list[str]:
        """``["database shop", "role app"]``: one phrase per object, sorted, for people."""
        return sorted(f"{kind} {name}" for kind, name in self.objects)


def snapshot(conn: AdminConnection) -> Snapshot:
    """Every role, database, tablespace and replication slot of the server behind ``conn``."""
    rows = conn.execute(_OBJECTS).fetchall()
    return Snapshot(frozenset((str(kind), str(name)) for kind, name in rows))
