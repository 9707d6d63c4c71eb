"""What the runs sharing one server hold on it, read without taking a lock: for ``unmocked status``.

A run is alive while a session holds its lease (:class:`unmocked.ownership.Lease`); that session's
application_name (:mod:`unmocked.session_names`) says the run's host, pid and user, and its
``backend_start`` when the run began. A run's connections are its process's own sessions and every
session connected to one of its databases. Databases of runs no longer alive are what a collection
drops (unless a session is still connected to them); templates are in use while some session holds
their in-use lock shared (read in ``pg_locks``: looking takes no lock, unlike
:func:`unmocked.ownership.run_is_alive`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from unmocked.connection_budget import Limit, server_limit
from unmocked.ownership import (
    LEASE_LOCK_CLASS,
    PREFIX,
    TEMPLATE_IN_USE_LOCK_CLASS,
    AdminConnection,
    Owner,
    lock_oid,
    our_databases,
)
from unmocked.session_names import SessionName

_SIZES = (
    "SELECT datname, CASE WHEN has_database_privilege(oid, 'CONNECT') "
    "THEN pg_database_size(oid) END FROM pg_database WHERE datname LIKE 'unmocked\\_%'"
)
_SESSIONS = (
    "SELECT pid, application_name, coalesce(datname, ''), backend_start "
    "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
)
# Advisory locks held on two int keys, by class: the lease's and the template-in-use one.
_ADVISORY = (
    "SELECT pid, classid::bigint, objid::bigint FROM pg_locks "
    "WHERE locktype = 'advisory' AND objsubid = 2 AND granted AND classid IN (%s, %s)"
)


@dataclass(frozen=True)
class Database:
    name: str
    owner: Owner
    size: int | None
    """Bytes; None when this role may not connect to it."""
    sessions: int


@dataclass
class Run:
    """A run alive now: the process holding its lease, and what it holds."""

    run: str
    process: SessionName | None
    started: datetime | None
    databases: list[Database] = field(default_factory=list)
    connections: int = 0


@dataclass(frozen=True)
class Template:
    name: str
    owner: Owner
    size: int | None
    in_use: bool


@dataclass(frozen=True)
class Fleet:
    runs: list[Run]
    abandoned: list[Database]
    """Databases of runs no longer alive (not the kept ones): what a collection drops, unless a
    session is connected to them."""
    kept: list[Database]
    templates: list[Template]
    """Most recently used first."""
    in_use: int
    """Client sessions on the server (besides the one that looked)."""
    others: int
    """Of those, the ones of no run."""
    limit: Limit


def look(conn: AdminConnection) -> Fleet:
    """Everything unmocked keeps on ``conn``'s server, by run; five queries, no lock."""
    databases = our_databases(conn)
    sizes = {str(name): size for name, size in conn.execute(_SIZES).fetchall()}
    sessions = conn.execute(_SESSIONS).fetchall()
    locks = conn.execute(_ADVISORY, (LEASE_LOCK_CLASS, TEMPLATE_IN_USE_LOCK_CLASS)).fetchall()
    on_database = Counter(str(datname) for _pid, _app, datname, _start in sessions)
    leases = {int(str(objid)) for _pid, classid, objid in locks if classid == LEASE_LOCK_CLASS}
    held = {int(str(objid)) for _pid, classid, objid in locks if classid != LEASE_LOCK_CLASS}
    lease_pids = {pid for pid, classid, _objid in locks if classid == LEASE_LOCK_CLASS}

    runs: dict[str, Run] = {}
    for pid, app, _datname, started in sessions:
        said = SessionName.parse(str(app or ""))
        if pid in lease_pids and said is not None and said.run and said.run not in runs:
            runs[said.run] = Run(said.run, said, started if isinstance(started, datetime) else None)

    abandoned, kept, templates = [], [], []
    for name, owner in databases:
        size = sizes.get(name)
        database = Database(
            name, owner, int(str(size)) if size is not None else None, on_database[name]
        )
        if owner.kind == "template":
            in_use = bool(owner.fingerprint) and lock_oid(owner.fingerprint or "") in held
            templates.append(Template(name, owner, database.size, in_use))
        elif owner.run in runs:
            runs[owner.run].databases.append(database)
        elif owner.kind == "kept":
            kept.append(database)
        elif owner.run and lock_oid(owner.run) not in leases:
            abandoned.append(database)
    templates.sort(key=lambda template: template.owner.used or 0, reverse=True)

    others = 0
    processes = {
        (r.process.pid, r.process.host, r.process.user): r for r in runs.values() if r.process
    }
    for _pid, app, datname, _start in sessions:
        said = SessionName.parse(str(app or ""))
        run = processes.get((said.pid, said.host, said.user)) if said is not None else None
        if run is None and str(datname).startswith(PREFIX):
            run = runs.get(str(datname)[len(PREFIX) : len(PREFIX) + 10])
        if run is None:
            others += 1
        else:
            run.connections += 1
    return Fleet(
        list(runs.values()), abandoned, kept, templates, len(sessions), others, server_limit(conn)
    )
