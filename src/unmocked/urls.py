"""Connection URLs: build them, change their database, and print them without secrets."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_PASSWORD_IN_DSN = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Return ``text`` with every password in a URL or key=value DSN replaced by ``***``."""
    return _PASSWORD_IN_DSN.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", text))


def with_database(url: str, database: str) -> str:
    """Return ``url`` pointing at ``database`` on the same server, with the same credentials."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


def database_of(url: str) -> str:
    """Return the database a URL names (``postgres`` when it names none, as libpq would not)."""
    path = unquote(urlsplit(url).path.lstrip("/"))
    return path or "postgres"


def local_url(host: str, port: int, user: str, database: str = "postgres") -> str:
    """A URL for a server unmocked started: trust authentication, so no password."""
    return f"postgresql://{quote(user, safe='')}@{host}:{port}/{quote(database, safe='')}"


def with_driver(url: str, driver: str) -> str:
    """Return ``url`` with an SQLAlchemy driver in its scheme: ``postgresql+psycopg://...``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=f"postgresql+{driver}"))
