"""Build-or-reuse the template database named by the migrations' fingerprint.

The template's name carries a digest of the migration inputs and the server's major version, so a
cached template is correct by construction: changed migrations are a new name. Builders serialise
on an advisory lock keyed by that digest, so of several workers or runs that need the same template
one builds and the others wait and reuse it. A build happens in a database of its own and is renamed
into place only once it succeeded, so a failed or killed build never leaves a template behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from unmocked import ownership
from unmocked.migrations import MigrationSource, digest
from unmocked.ownership import AdminConnection, Owner
from unmocked.urls import with_database

# Bump when the way templates are built changes, so old caches are not reused.
TEMPLATE_FORMAT = b"1"


@dataclass(frozen=True)
class Template:
    """A migrated database that fresh and rollback databases are cloned from."""

    name: str
    fingerprint: str
    reused: bool
    seconds: float


def template_fingerprint(source: MigrationSource, major: int) -> str:
    return digest(TEMPLATE_FORMAT, str(major).encode(), source.fingerprint().encode())


def template_name(fingerprint: str) -> str:
    return f"{ownership.PREFIX}tpl_{fingerprint[:16]}"


def ensure_template(
    conn: AdminConnection,
    admin_url: str,
    source: MigrationSource,
    major: int,
    run_id: str,
    base: str = "template0",
) -> Template:
    """Return the template for ``source``, building it first if no run has built it yet.

    ``source`` is applied to a copy of ``base``: an empty database, or another template of ours
    that the new one adds to (``source``'s fingerprint must then cover ``base``'s).
    """
    started = time.perf_counter()
    fingerprint = template_fingerprint(source, major)
    name = template_name(fingerprint)
    lock = (ownership.TEMPLATE_LOCK_CLASS, ownership.lock_key(fingerprint))
    conn.execute("SELECT pg_advisory_lock(%s, %s)", lock)
    try:
        reused = _is_ready(conn, name)
        if not reused:
            _build(conn, admin_url, source, name, fingerprint, run_id, base)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)
    return Template(name, fingerprint, reused, time.perf_counter() - started)


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


def _is_ready(conn: AdminConnection, name: str) -> bool:
    row = conn.execute(
        "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return bool(row and row[0])


def _build(
    conn: AdminConnection,
    admin_url: str,
    source: MigrationSource,
    name: str,
    fingerprint: str,
    run_id: str,
    base: str,
) -> None:
    build = f"{ownership.PREFIX}build_{fingerprint[:16]}_{run_id}"
    # A template of ours that is not marked ready is a leftover: drop it before building anew.
    ownership.drop_database(conn, name)
    ownership.create_database(
        conn,
        build,
        Owner("build", run=run_id, fingerprint=fingerprint),
        base,
        clone_strategy(conn),
    )
    try:
        source.apply(with_database(admin_url, build))
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
        ownership.record_owner(conn, name, Owner("template", fingerprint=fingerprint))
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )
    except BaseException:
        ownership.drop_database(conn, build)
        ownership.drop_database(conn, name)
        raise


def drop_templates(conn: AdminConnection, keep: set[str] | None = None) -> list[str]:
    """Drop every template of ours except those named in ``keep``; return the names dropped."""
    dropped = []
    for name, owner in ownership.our_databases(conn):
        if owner.kind == "template" and name not in (keep or set()):
            try:
                ownership.drop_database(conn, name)
            except psycopg.errors.ObjectInUse:
                continue
            dropped.append(name)
    return dropped
