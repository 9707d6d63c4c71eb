"""Databases and roles a suite created for itself while its database was exported.

Suites run with ``unmocked run`` (or the exported environment) often create their own databases
and roles. A server unmocked started keeps its data folder for later runs, so what a suite left
there would pile up: :func:`remove` drops it. On a server given by URL nothing that unmocked did not
create is dropped; :func:`new_since` lets the caller report it instead. Databases unmocked itself
created carry an owner record and are left to :mod:`unmocked.ownership` (templates are kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from unmocked import cluster_objects
from unmocked.ownership import AdminConnection, owner_of
from unmocked.urls import with_database


@dataclass(frozen=True)
class Leftovers:
    """The databases and roles a suite created, unmocked's own databases left out."""

    databases: frozenset[str]
    roles: frozenset[str]


def new_since(conn: AdminConnection, before: cluster_objects.Snapshot) -> Leftovers:
    """What exists now and did not at ``before``, except unmocked's own databases."""
    appeared = cluster_objects.snapshot(conn).since(before)
    databases = {name for name in appeared.named("database") if owner_of(conn, name) is None}
    return Leftovers(frozenset(databases), appeared.named("role"))


def remove(conn: AdminConnection, admin_url: str, before: cluster_objects.Snapshot) -> Leftovers:
    """Drop every database and role created since ``before``; return what was dropped.

    Only for servers unmocked started: there, nothing but the runs' suites creates anything.
    Databases go first (a role cannot be dropped while it owns one); then, in every database where
    a new role still owns objects or holds privileges, ``DROP OWNED BY``; then the roles.
    """
    created = new_since(conn, before)
    for name in sorted(created.databases):
        identifier = sql.Identifier(name)
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(identifier))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))
    if created.roles:
        roles = sql.SQL(", ").join(sql.Identifier(name) for name in sorted(created.roles))
        for database in _databases_depending_on(conn, created.roles):
            with psycopg.connect(with_database(admin_url, database), autocommit=True) as other:
                other.execute(sql.SQL("DROP OWNED BY {}").format(roles))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(roles))
        conn.execute(sql.SQL("DROP ROLE {}").format(roles))
    return created


def _databases_depending_on(conn: AdminConnection, roles: frozenset[str]) -> list[str]:
    """Databases other than the admin connection's where ``roles`` own objects or hold grants."""
    rows = conn.execute(
        "SELECT DISTINCT d.datname FROM pg_shdepend s "
        "JOIN pg_database d ON d.oid = s.dbid "
        "JOIN pg_roles r ON r.oid = s.refobjid AND s.refclassid = 'pg_authid'::regclass "
        "WHERE r.rolname = ANY(%s) AND d.datname <> current_database() AND d.datallowconn",
        (sorted(roles),),
    ).fetchall()
    return [str(name) for (name,) in rows]
