"""Build-or-reuse the template database named by the migrations' fingerprint, saying what it does.

The template's name carries a digest of the migration inputs and the server's major version, so a
cached template is correct by construction: changed migrations are a new name. In order:

1. the session takes the template's in-use lock (shared, for the rest of its life), so that no
   collection of old templates (:func:`unmocked.ownership.old_templates`) drops it under a clone;
2. builders serialise on an advisory lock keyed by the digest, so of several workers or runs that
   need the same template one builds and the others wait and reuse it. A run that waits longer
   than a couple of seconds says for whom (process, machine, since when), and gives up after the
   build timeout;
3. a build happens in a database of its own and is renamed into place only once it succeeded, so
   a failed or killed build never leaves a template behind. While it runs, a thread of its own
   writes a progress line every few seconds (the step that runs and for how long) and, at the
   build timeout, cancels the build's statements: the build fails naming the step, nothing cached;
4. a reused template's last use is recorded (at most hourly), which is what collection goes by.

Watching a build (progress lines, the timeout) is :mod:`unmocked.build_watch`'s job.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from unmocked import ownership
from unmocked.build_watch import (
    FIRST_PROGRESS_AFTER,
    apply_watched,
    next_progress,
    progress_lines,
    say,
)
from unmocked.errors import MigrationError
from unmocked.migrations import MigrationSource, digest
from unmocked.ownership import AdminConnection, Owner
from unmocked.settings import DEFAULT_BUILD_TIMEOUT

# Bump when the way templates are built changes, so old caches are not reused.
TEMPLATE_FORMAT = b"1"

# How much longer than the build timeout a run waits for another run's build: that run cancels
# its own build at the timeout, and needs a moment to drop it and let go of the lock.
WAIT_GRACE = 30.0


@dataclass(frozen=True)
class Template:
    """A migrated database that fresh and rollback databases are cloned from."""

    name: str
    fingerprint: str
    reused: bool
    seconds: float


def template_fingerprint(source: MigrationSource, major: int, role: str) -> str:
    """What names a template: the migrations, the server's major version, and the role that runs
    them, which owns what they create: a role that is not superuser may not use the tables of a
    template another role built, so each role builds its own."""
    return digest(
        TEMPLATE_FORMAT, str(major).encode(), role.encode(), source.fingerprint().encode()
    )


def template_name(fingerprint: str) -> str:
    return f"{ownership.PREFIX}tpl_{fingerprint[:16]}"


def ensure_template(
    conn: AdminConnection,
    admin_url: str,
    source: MigrationSource,
    major: int,
    run_id: str,
    base: str = "template0",
    timeout: float = DEFAULT_BUILD_TIMEOUT,
) -> Template:
    """Return the template for ``source``, building it first if no run has built it yet.

    ``source`` is applied to a copy of ``base``: an empty database, or another template of ours
    that the new one adds to (``source``'s fingerprint must then cover ``base``'s). ``timeout``
    (seconds; 0 for none) bounds the build, and the wait for another run's build: then a
    :class:`~unmocked.errors.MigrationError` names what ran, and nothing is cached. The template
    stays held by ``conn``'s session (see :func:`hold`).
    """
    started = time.perf_counter()
    fingerprint = template_fingerprint(source, major, str(conn.info.user))
    name = template_name(fingerprint)
    # Before the build lock: a collection dropping this template right now finishes first, and
    # this session then finds it gone and builds it anew.
    hold(conn, fingerprint)
    lock = (ownership.TEMPLATE_LOCK_CLASS, ownership.lock_key(fingerprint))
    _take_build_lock(conn, lock, name, fingerprint, source, timeout)
    try:
        ready, owner = _ready_template(conn, name)
        if ready:
            _record_use(conn, name, owner)
        else:
            _build(conn, admin_url, source, name, fingerprint, run_id, base, timeout)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)
    return Template(name, fingerprint, ready, time.perf_counter() - started)


def hold(conn: AdminConnection, fingerprint: str) -> None:
    """Keep the template of ``fingerprint`` from collection for as long as ``conn``'s session lives.

    :func:`ensure_template` does it; a session that reopens its admin connection does it again for
    the templates it still clones from, before anything collects.
    """
    lock = ownership.template_in_use_lock(Owner("template", fingerprint=fingerprint))
    conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", lock)


def clone_strategy(conn: AdminConnection) -> str | None:
    """How ``CREATE DATABASE`` should copy a template on the server behind ``conn``.

    FILE_COPY when fsync is off (servers unmocked tunes): WAL_LOG, the default since 15, writes
    every page to WAL, which costs more than it saves for the small databases tests use. With
    fsync on (a server given by URL), FILE_COPY's two checkpoints cost far more, so the default
    stays. PostgreSQL 18's ``file_copy_method = clone`` (``copy_file_range`` on Linux) is left
    off: on /dev/shm (tmpfs, no reflinks) it copied a 15 MB template in 52 ms against 57 ms,
    within the noise, and it fails outright on file systems that cannot do it.
    """
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int >= 150000 "
        "AND NOT current_setting('fsync')::bool"
    ).fetchone()
    return "FILE_COPY" if row and row[0] else None


def _ready_template(conn: AdminConnection, name: str) -> tuple[bool, Owner | None]:
    """Whether ``name`` is built and marked a template, and the owner its comment records."""
    row = conn.execute(
        "SELECT datistemplate, shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname = %s",
        (name,),
    ).fetchone()
    if not row or not row[0]:
        return False, None
    return True, Owner.parse(str(row[1]) if row[1] else None)


def _record_use(conn: AdminConnection, name: str, owner: Owner | None) -> None:
    """Record that a run uses the template now, unless it was recorded within the hour.

    Under the build lock, so two runs never comment on one database at once.
    """
    now = int(time.time())
    if owner is None or owner.kind != "template":
        return
    if owner.used is not None and now - owner.used < ownership.TEMPLATE_USE_RECORDED_EVERY:
        return
    ownership.record_owner(conn, name, replace(owner, used=now))


def _build(
    conn: AdminConnection,
    admin_url: str,
    source: MigrationSource,
    name: str,
    fingerprint: str,
    run_id: str,
    base: str,
    timeout: float,
) -> None:
    build = f"{ownership.PREFIX}build_{fingerprint[:16]}_{run_id}"
    # A template of ours that is not marked ready is a leftover: drop it before building anew.
    ownership.drop_database(conn, name)
    builder = Owner(
        "build",
        run=run_id,
        fingerprint=fingerprint,
        since=int(time.time()),
        pid=os.getpid(),
        host=socket.gethostname(),
    )
    ownership.create_database(conn, build, builder, base, clone_strategy(conn))
    try:
        apply_watched(admin_url, build, source, name, timeout)
        # Migrations may leave sessions open (pools, engines not disposed); a template must have
        # none, or CREATE DATABASE ... TEMPLATE refuses to copy it.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (build,),
        )
        conn.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(build), sql.Identifier(name)
            )
        )
        ownership.record_owner(
            conn, name, Owner("template", fingerprint=fingerprint, used=int(time.time()))
        )
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )
    except BaseException:
        ownership.drop_database(conn, build)
        ownership.drop_database(conn, name)
        raise


def _take_build_lock(
    conn: AdminConnection,
    lock: tuple[int, int],
    name: str,
    fingerprint: str,
    source: MigrationSource,
    timeout: float,
) -> None:
    """Take the build lock of ``name``; while another run holds it, say whose build this waits
    for, and give up after ``timeout`` and :data:`WAIT_GRACE` (a MigrationError)."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", lock).fetchone()
    if row and row[0]:
        return
    write = progress_lines()
    started = time.monotonic()
    limit = timeout + WAIT_GRACE if timeout else None
    due = FIRST_PROGRESS_AFTER
    while True:
        waited = time.monotonic() - started
        if limit is not None and waited >= limit:
            holder = _build_holder(conn, lock, fingerprint)
            raise MigrationError(
                f"Waited {waited:.0f} s for another run's build of template {name} "
                f"({source.describe()}), and gave up: {holder}, longer than "
                f"unmocked_build_timeout ({timeout:g} s) allows. Nothing was cached. See what "
                "that process does (its migrations may hang, or it may be stopped) and end it if "
                "it is stuck, or raise unmocked_build_timeout (UNMOCKED_BUILD_TIMEOUT, in "
                "seconds; 0 for no limit)."
            )
        if _lock_within(conn, lock, min(due, limit or due) - waited):
            return
        waited = time.monotonic() - started
        if waited >= due:
            holder = _build_holder(conn, lock, fingerprint)
            gives_up = f"; this run waits at most {limit:.0f} s" if limit else ""
            say(
                write,
                f"unmocked: waiting {waited:.0f} s for another run's build of template "
                f"{name} ({source.describe()}): {holder}{gives_up}",
            )
            due = next_progress(waited)


def _lock_within(conn: AdminConnection, lock: tuple[int, int], seconds: float) -> bool:
    """Take ``lock`` (session level) if it comes free within ``seconds``; True once taken."""
    milliseconds = max(1, int(seconds * 1000))  # 0 would mean: wait for ever
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{milliseconds}ms",))
            conn.execute("SELECT pg_advisory_lock(%s, %s)", lock)
    except psycopg.errors.LockNotAvailable:
        return False
    return True  # a session-level lock outlives the transaction it was taken in


_LOCK_HOLDER = """
SELECT a.pid, host(a.client_addr), a.application_name
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid AND l.objid = %s::oid
   AND l.objsubid = 2
"""


def _build_holder(conn: AdminConnection, lock: tuple[int, int], fingerprint: str) -> str:
    """Whose build holds ``lock``, in words: the process and machine its build database records
    (and since when), else the server's view of the session that holds the lock."""
    prefix = f"{ownership.PREFIX}build_{fingerprint[:16]}_".replace("_", "\\_")
    rows = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE %s",
        (prefix + "%",),
    ).fetchall()
    for (comment,) in rows:
        owner = Owner.parse(str(comment) if comment else None)
        if owner is not None and owner.kind == "build" and owner.pid is not None:
            since = time.strftime("%H:%M:%S", time.localtime(owner.since or 0))
            took = ownership.age_in_words(time.time() - (owner.since or 0))
            return (
                f"process {owner.pid} on {owner.host or 'an unknown machine'} (run {owner.run}) "
                f"has been building it since {since} ({took})"
            )
    row = conn.execute(_LOCK_HOLDER, (lock[0] & 0xFFFFFFFF, lock[1] & 0xFFFFFFFF)).fetchone()
    if row is None:
        return "it has just finished"
    client = f"from {row[1]}" if row[1] else "over a local socket"
    application = f", application {row[2]!r}" if row[2] else ""
    return f"PostgreSQL session {row[0]} ({client}{application}) holds its build lock"


# -- what is held -----------------------------------------------------------------------------


def drop_templates(conn: AdminConnection, keep: set[str] | None = None) -> list[str]:
    """Drop every template of ours except those named in ``keep`` and those a live session
    clones from (:func:`hold`); return the names dropped."""
    dropped = []
    for name, owner in ownership.our_databases(conn):
        if (
            owner.kind == "template"
            and name not in (keep or set())
            and ownership.drop_template_unless_in_use(conn, name, owner)
        ):
            dropped.append(name)
    return dropped


@dataclass(frozen=True)
class HeldTemplates:
    """The templates of ours on one server (pg_url's copies with the reset machinery included)."""

    count: int
    bytes: int
    """Their size on the server's disk (``pg_database_size``), together."""
    least_recent_use: int | None
    """The oldest last use among them, in seconds since the epoch; None when none is recorded."""
    unrecorded: int
    """Templates of unmocked 0.1.0, which record no use (``unmocked gc --templates`` drops them)."""


def held_templates(conn: AdminConnection) -> HeldTemplates:
    """Count and size the templates of ours on the server behind ``conn``."""
    rows: list[Any] = conn.execute(
        "SELECT datname, shobj_description(oid, 'pg_database'), pg_database_size(oid) "
        "FROM pg_database WHERE datname LIKE 'unmocked\\_%'"
    ).fetchall()
    owners = [(Owner.parse(str(comment) if comment else None), size) for _, comment, size in rows]
    templates = [
        (owner, int(size or 0)) for owner, size in owners if owner and owner.kind == "template"
    ]
    uses = [owner.used for owner, _ in templates if owner.used is not None]
    return HeldTemplates(
        count=len(templates),
        bytes=sum(size for _, size in templates),
        least_recent_use=min(uses) if uses else None,
        unrecorded=len(templates) - len(uses),
    )
