"""Settings a test can leave on a whole server, kept from later runs and from unmocked's sessions.

A ``pg_url`` test may run ``ALTER SYSTEM``, ``ALTER ROLE ... SET`` or ``ALTER DATABASE ... SET``;
PostgreSQL keeps them for every later session, across restarts, so one test could make every later
run's sessions read-only or time them out. Four parts of unmocked deal with them:

1. unmocked's own sessions (admin, lease, reset) connect with :data:`OWN_SESSION_SETTINGS` in their
   connection options (:func:`own_session_conninfo`, :func:`connect`), which win over all three,
   and with an application_name of :mod:`unmocked.session_names`, which tells them from the code
   under test's;
2. a server unmocked owns is put back to its known state every time it starts (:func:`restore`):
   no ``ALTER SYSTEM`` entries, no settings of the admin role, of every role (``ALTER ROLE ALL``)
   or of the maintenance databases, and a maintenance database that refuses connections takes them
   again. What cannot be put back over SQL (the admin role may no longer log in, or is no longer a
   superuser) is a :class:`~unmocked.errors.ServerError` saying which folder to delete. Roles the
   migrations created keep their settings: the template that relies on them is reused, not rebuilt;
3. on a server given by URL nothing is altered: :func:`departures` lists what new sessions there
   inherit that would break them, for ``unmocked doctor``;
4. the run whose test made the change is told by name: :data:`SETTINGS_MADE` describes each
   setting as the statement that made it, which :mod:`unmocked.cluster_objects` puts in its
   snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from unmocked.errors import ServerError
from unmocked.session_names import own_application_name
from unmocked.urls import database_of, redact, with_database

if TYPE_CHECKING:
    from unmocked.servers import RunningServer, Server

OWN_SESSION_SETTINGS = (
    # (first major version that has it, name, value): what would make our sessions read-only, or
    # end the admin and lease sessions while they wait between tests.
    (9, "default_transaction_read_only", "off"),
    (9, "statement_timeout", "0"),
    (9, "lock_timeout", "0"),
    (9, "idle_in_transaction_session_timeout", "0"),
    (14, "idle_session_timeout", "0"),
    (17, "transaction_timeout", "0"),
)

# Each setting of pg_db_role_setting as the statement that made it, and the one that undoes it.
SETTINGS_MADE = """
SELECT CASE WHEN s.setrole = 0 AND s.setdatabase = 0 THEN format('ALTER ROLE ALL SET %s', c)
            WHEN s.setrole = 0 THEN format('ALTER DATABASE %I SET %s', d.datname, c)
            WHEN s.setdatabase = 0 THEN format('ALTER ROLE %I SET %s', r.rolname, c)
            ELSE format('ALTER ROLE %I IN DATABASE %I SET %s', r.rolname, d.datname, c)
       END AS made_by,
       CASE WHEN s.setrole = 0 AND s.setdatabase = 0 THEN 'ALTER ROLE ALL RESET '
            WHEN s.setrole = 0 THEN format('ALTER DATABASE %I RESET ', d.datname)
            WHEN s.setdatabase = 0 THEN format('ALTER ROLE %I RESET ', r.rolname)
            ELSE format('ALTER ROLE %I IN DATABASE %I RESET ', r.rolname, d.datname)
       END || quote_ident(split_part(c, '=', 1)) AS undone_by,
       split_part(c, '=', 1) AS name, r.rolname AS role, d.datname AS database
  FROM pg_db_role_setting s
  LEFT JOIN pg_roles r ON r.oid = s.setrole
  LEFT JOIN pg_database d ON d.oid = s.setdatabase,
       unnest(s.setconfig) AS c
"""

# ALTER SYSTEM's entries (superusers only). pg_file_settings parses the configuration files anew on
# every read, which costs milliseconds: callers that look often read ALTER_SYSTEM_FILE's change
# marker first (one stat) and these only when it moved.
ALTER_SYSTEM_MADE = """
SELECT format('ALTER SYSTEM SET %s = %L', name, setting), name FROM pg_file_settings
 WHERE sourcefile LIKE '%postgresql.auto.conf'
"""
ALTER_SYSTEM_FILE = (
    "SELECT modification::text || ' ' || size FROM pg_stat_file('postgresql.auto.conf', true)"
)

# The admin role losing what unmocked needs of it, or its database closed to connections, as the
# statement that did it.
ADMIN_ACCESS_LOST = """
SELECT format('ALTER ROLE %I NOLOGIN', rolname) FROM pg_roles
 WHERE rolname = current_user AND NOT rolcanlogin
UNION ALL SELECT format('ALTER ROLE %I NOSUPERUSER', rolname) FROM pg_roles
 WHERE rolname = current_user AND NOT rolsuper
UNION ALL SELECT format('ALTER DATABASE %I WITH ALLOW_CONNECTIONS false', datname) FROM pg_database
 WHERE datname = current_database() AND NOT datallowconn
"""

# Databases unmocked's sessions connect to besides its own: their settings are put back.
_MAINTENANCE_DATABASES = ("postgres", "template1")


def own_session_options(major: int, options: str = "") -> str:
    """libpq ``options`` that give a session :data:`OWN_SESSION_SETTINGS`, after ``options``."""
    ours = [f"-c {name}={value}" for since, name, value in OWN_SESSION_SETTINGS if major >= since]
    return " ".join([options, *ours]).strip()


def own_session_conninfo(url: str, major: int, run: str | None = None) -> str:
    """``url`` as a libpq connection string for a session of unmocked's own (see
    :data:`OWN_SESSION_SETTINGS`), named by :func:`~unmocked.session_names.own_application_name`
    (``run``: the run whose lease it holds); the URL's own ``options`` are kept, ours come after."""
    options = conninfo_to_dict(url).get("options") or ""
    return make_conninfo(
        url,
        options=own_session_options(major, str(options)),
        application_name=own_application_name(run),
    )


def connect(
    url: str, major: int, run: str | None = None, **kwargs: Any
) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection for unmocked's own work, deaf to settings tests left (``run``:
    the run whose lease it is to hold)."""
    return psycopg.connect(own_session_conninfo(url, major, run), autocommit=True, **kwargs)


def is_superuser(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn``'s role is a superuser, as the server reported on connecting (no query)."""
    return conn.info.parameter_status("is_superuser") == "on"


def restore(running: RunningServer) -> RunningServer:
    """Put a server unmocked owns back to its known state; ``running.restored`` says what it undid.

    Raises :class:`ServerError` (and stops nothing: the caller owns the server) when the admin role
    cannot log in or is no longer a superuser, which no SQL session can repair.
    """
    server = running.server
    with _connect_repairing(server, running) as conn:
        lost = [str(row[0]) for row in conn.execute(ADMIN_ACCESS_LOST) if "NOSUPERUSER" in row[0]]
        if lost:  # a role that cannot log in could not have connected
            raise _beyond_repair(server, f"is no longer a superuser ({'; '.join(lost)})")
        undone = list(running.restored)
        for made_by, undone_by, _name, role, database in conn.execute(SETTINGS_MADE).fetchall():
            ours = role == conn.info.user or (role is None and database is None)
            if ours or (role is None and database in _maintenance(server)):
                conn.execute(str(undone_by))
                undone.append(str(made_by))
        entries = [str(row[0]) for row in conn.execute(ALTER_SYSTEM_MADE)]
        if entries:
            conn.execute("ALTER SYSTEM RESET ALL")
            conn.execute("SELECT pg_reload_conf()")
            undone += entries
    running.restored = tuple(undone)
    return running


def departures(conn: psycopg.Connection[Any]) -> list[str]:
    """What new sessions on ``conn``'s server inherit that would break them: the statements that
    set :data:`OWN_SESSION_SETTINGS` for its role, every role or its database, or server-wide."""
    names = {name for _since, name, _value in OWN_SESSION_SETTINGS}
    database = conn.info.dbname
    found = []
    for made_by, _undone_by, name, role, on in conn.execute(SETTINGS_MADE).fetchall():
        if name in names and role in (None, conn.info.user) and on in (None, database):
            found.append(str(made_by))
    if is_superuser(conn):
        found += [str(made) for made, name in conn.execute(ALTER_SYSTEM_MADE) if name in names]
    return found


def _maintenance(server: Server) -> set[str]:
    return {*_MAINTENANCE_DATABASES, database_of(server.url)}


def _connect_repairing(server: Server, running: RunningServer) -> psycopg.Connection[Any]:
    """A session of our own on the admin database, which it first opens again if a test closed it
    to connections (``ALLOW_CONNECTIONS false``) or dropped it."""
    try:
        return connect(server.url, server.major)
    except psycopg.OperationalError as error:
        why = str(error)
        user = conninfo_to_dict(server.url).get("user") or "postgres"
        if "not permitted to log in" in why:
            raise _beyond_repair(server, f"cannot log in (ALTER ROLE {user} NOLOGIN)") from None
        if "password authentication failed" in why:
            raise _beyond_repair(
                server, f"no longer has the cluster's password (ALTER ROLE {user} PASSWORD)"
            ) from None
        if "does not exist" not in why and "not currently accepting connections" not in why:
            raise ServerError(
                f"{server.describe()} started, but refuses unmocked's session: "
                f"{redact(why).strip()}. Its log is beside {server.data_dir}."
            ) from None
    database = database_of(server.url)
    with connect(with_database(server.url, "template1"), server.major) as other:
        name = sql.Identifier(database)
        found = other.execute("SELECT FROM pg_database WHERE datname = %s", (database,))
        if found.fetchone() is not None:
            other.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(name))
            running.restored += (f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false",)
        else:
            other.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(name))
            running.restored += (f"DROP DATABASE {database}",)
    return connect(server.url, server.major)


def _beyond_repair(server: Server, what: str) -> ServerError:
    user = conninfo_to_dict(server.url).get("user") or "postgres"
    where = server.data_dir.parent if server.data_dir is not None else redact(server.url)
    return ServerError(
        f"The role {user!r} of {server.describe()} {what}: a test must have changed it, and "
        "unmocked connects as that role. "
        f"A SQL session cannot repair that: delete {where} and run again (initdb rebuilds the "
        "cluster, and the templates are built again)."
    )
