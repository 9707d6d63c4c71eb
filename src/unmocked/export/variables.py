"""The environment variables that name a database, for code that reads its own configuration.

Most suites find their database in the environment, often at import time: ``DATABASE_URL``, the
libpq variables (``PGHOST``...), or names of their own such as ``DATABASE__HOSTNAME``. The
libpq variables and ``DATABASE_URL`` are always given; other names come from templates
(``{host}``, ``{url:asyncpg}``...), see :func:`database_variables`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from psycopg import pq

from unmocked.errors import ConfigurationError
from unmocked.urls import database_of, libpq_params, with_database, with_driver

PLACEHOLDERS = ("host", "port", "user", "password", "database", "url")
_PLACEHOLDER = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")
# libpq variables that would send a client elsewhere than the variables unmocked exports.
OVERRIDING = ("PGHOSTADDR", "PGSERVICE", "PGSERVICEFILE", "PGPASSFILE", "PGREQUIREAUTH")


def database_variables(
    server_url: str, database: str, templates: Sequence[tuple[str, str]] = ()
) -> dict[str, str]:
    """``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE`` and ``DATABASE_URL``
    for ``database`` on the server of ``server_url``, plus one variable per ``(NAME, TEMPLATE)``.

    ``PGPASSWORD`` is given only when the URL carries a password: an empty one would make libpq
    send it instead of using the server's trust or a ``.pgpass`` file. The URL's other libpq
    keywords (``hostaddr``, ``sslmode``...) are given as their variables (``PGHOSTADDR``,
    ``PGSSLMODE``...), so a client of the variables connects as a client of ``DATABASE_URL``.
    """
    url = with_database(server_url, database)
    parts = _parts(url)
    exported = {
        "PGHOST": parts["host"],
        "PGPORT": parts["port"],
        "PGUSER": parts["user"],
        "PGDATABASE": parts["database"],
        "DATABASE_URL": parts["url"],
    }
    if parts["password"]:
        exported["PGPASSWORD"] = parts["password"]
    exported.update(_other_keywords_as_variables(url))
    for name, template in templates:
        exported[name] = expand(template, parts, name)
    return exported


def environ_with(
    environ: dict[str, str] | Mapping[str, str], exported: Mapping[str, str]
) -> dict[str, str]:
    """``environ`` with ``exported`` set and the libpq variables that would override them unset."""
    merged = {key: value for key, value in environ.items() if key not in OVERRIDING}
    merged.update(exported)
    return merged


def expand(template: str, parts: Mapping[str, str], name: str = "") -> str:
    """Fill ``{host}``, ``{port}``, ``{user}``, ``{password}``, ``{database}``, ``{url}`` and
    ``{url:DRIVER}`` (``postgresql+DRIVER://...``, as SQLAlchemy names drivers) in ``template``."""

    def fill(match: re.Match[str]) -> str:
        field, driver = match.group(1), match.group(2)
        if field not in PLACEHOLDERS or (driver is not None and field != "url"):
            raise ConfigurationError(
                f"unmocked_env {name}={template}: unknown placeholder {match.group(0)}. Use "
                + ", ".join("{" + known + "}" for known in PLACEHOLDERS)
                + " or {url:DRIVER} (for example {url:asyncpg})."
            )
        if driver:
            return with_driver(parts["url"], driver)
        return parts[field]

    return _PLACEHOLDER.sub(fill, template)


def _other_keywords_as_variables(url: str) -> dict[str, str]:
    variables = {
        option.keyword.decode(): option.envvar.decode()
        for option in pq.Conninfo.get_defaults()
        if option.envvar
    }
    given = libpq_params(url)
    return {
        variables[keyword]: value
        for keyword, value in given.items()
        if keyword in variables and keyword not in ("host", "port", "user", "password", "dbname")
    }


def _parts(url: str) -> dict[str, str]:
    """The pieces of ``url`` as libpq reads them (a socket folder given as ``?host=`` included),
    so the variables name the server unmocked itself connects to."""
    params = libpq_params(url)
    return {
        "host": params.get("host") or "localhost",
        "port": params.get("port") or "5432",
        "user": params.get("user", ""),
        "password": params.get("password", ""),
        "database": database_of(url),
        "url": url,
    }
