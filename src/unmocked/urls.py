"""Connection URLs: read the one a user gives, build them, change their database, and print
them without secrets.

1. :func:`server_url` reads ``UNMOCKED_DATABASE_URL`` once, when the settings are read: a
   ``postgresql://`` URL or a libpq ``key=value`` string, parsed by libpq itself, is written back
   as one complete URL (host, port, user and database all named), so every program unmocked hands
   the server to (exported variables, xdist workers, other drivers) reaches the same server.
2. Every URL unmocked hands on is a :class:`DatabaseURL`: a ``str`` that connects as any other,
   whose ``repr()`` (what pytest prints for a failed test's arguments and ``-l`` locals) hides
   the password.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from unmocked.errors import ConfigurationError

_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_PASSWORD_IN_DSN = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_EXAMPLES = (
    "Write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE (percent-encode special "
    "characters) or as host=HOST port=PORT user=USER password=PASSWORD dbname=DATABASE."
)


class DatabaseURL(str):
    """A connection URL: a plain ``str`` to every driver, ``str()``, f-string and ``==``, whose
    ``repr()`` hides the password, so a failed test's report does not print it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(redact(self))


def redact(text: str) -> str:
    """Return ``text`` with every password in a URL or key=value DSN replaced by ``***``."""
    return _PASSWORD_IN_DSN.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", text))


def server_url(
    text: str, setting: str = "UNMOCKED_DATABASE_URL", environ: Mapping[str, str] = os.environ
) -> DatabaseURL:
    """The server ``text`` names (a ``postgresql://`` URL or a ``key=value`` DSN), as one URL that
    names its host, port, user and database; :class:`~unmocked.errors.ConfigurationError`, naming
    ``setting`` with the value redacted, for anything else.

    What ``text`` leaves out is filled in once, here, so that no program handed the URL fills it
    in differently: the host, port and user as libpq would in this process (``PGHOST``,
    ``PGPORT`` or 5432, ``PGUSER`` or the account's name), the database with ``postgres``, the
    maintenance database (``PGDATABASE`` is what ``unmocked run`` exports, not a maintenance
    database). A URL with no host and no ``PGHOST`` is refused: libpq would pick the Unix socket
    folder it was built with, which other drivers and languages do not share.
    """
    shown = f"{setting} = {redact(text)!r}"
    scheme = _SCHEME.match(text)
    if scheme and scheme.group(1).startswith(("postgresql+", "postgres+")):
        raise ConfigurationError(
            f"{shown} is a SQLAlchemy URL: unmocked connects with libpq, which does not read the "
            "+driver part. Write it as postgresql://... without it."
        )
    if scheme and scheme.group(1) not in ("postgresql", "postgres"):
        raise ConfigurationError(f"{shown} is not a PostgreSQL URL. {_EXAMPLES}")
    try:
        params = libpq_params(text)
    except ProgrammingError as error:
        why = redact(str(error)).strip()
        raise ConfigurationError(f"{shown} is not a PostgreSQL URL ({why}). {_EXAMPLES}") from None
    host = params.pop("host", "") or params.pop("hostaddr", "") or environ.get("PGHOST", "")
    port = params.pop("port", "") or environ.get("PGPORT", "") or "5432"
    if not host:
        raise ConfigurationError(
            f"{shown} names no host (and PGHOST is not set): libpq would use the Unix socket "
            "folder it was built with, which the programs unmocked hands the server to may not "
            "share. Name the host, for example postgresql://postgres@127.0.0.1:5432/postgres, "
            "or a socket folder: host=/var/run/postgresql port=5432 user=postgres."
        )
    if "," in host or "," in port:
        raise ConfigurationError(
            f"{shown} names several hosts ({host}): name the one server unmocked should use."
        )
    if not port.isdigit():
        raise ConfigurationError(f"{shown}: the port {port!r} is not a number. {_EXAMPLES}")
    user = params.pop("user", "") or environ.get("PGUSER", "") or pwd.getpwuid(os.geteuid())[0]
    password = params.pop("password", "")
    database = params.pop("dbname", "") or "postgres"
    credentials = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    if host.startswith("/"):
        # A socket folder goes in the query: SQLAlchemy does not decode a %2F host, and asyncpg
        # reads no port next to an empty host.
        where, params = "", {"host": host, "port": port, **params}
    else:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
    query = f"?{urlencode(params, safe='/', quote_via=quote)}" if params else ""
    return DatabaseURL(f"postgresql://{credentials}@{where}/{quote(database, safe='')}{query}")


def libpq_params(url: str) -> dict[str, str]:
    """The keywords libpq reads from a URL or DSN (``host``, ``port``, ``dbname``...), decoded.

    Raises :class:`psycopg.ProgrammingError` for text libpq cannot read.
    """
    return {key: str(value) for key, value in conninfo_to_dict(url).items() if value is not None}


def with_database(url: str, database: str) -> DatabaseURL:
    """Return ``url`` pointing at ``database`` on the same server, with the same credentials."""
    parts = urlsplit(url)
    return DatabaseURL(urlunsplit(parts._replace(path="/" + quote(database, safe=""))))


def database_of(url: str) -> str:
    """Return the database a URL names (``postgres`` when it names none, as libpq would not)."""
    path = unquote(urlsplit(url).path.lstrip("/"))
    return path or "postgres"


def local_url(host: str, port: int, user: str, password: str, database: str = "postgres") -> str:
    """A URL for a server unmocked started, carrying the cluster's secret (see the README's
    security model); print it only through :func:`redact`."""
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"
        f"{quote(database, safe='')}"
    )


def with_credentials(url: str, user: str, password: str) -> DatabaseURL:
    """Return ``url`` (same server, database and options) logging in as ``user``."""
    parts = urlsplit(url)
    where = parts.netloc.rpartition("@")[2]
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return DatabaseURL(urlunsplit(parts._replace(netloc=f"{credentials}@{where}")))


def with_driver(url: str, driver: str) -> DatabaseURL:
    """Return ``url`` with an SQLAlchemy driver in its scheme: ``postgresql+psycopg://...``."""
    parts = urlsplit(url)
    return DatabaseURL(urlunsplit(parts._replace(scheme=f"postgresql+{driver}")))
