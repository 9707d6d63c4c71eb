"""The environment variables that name a database, for code that reads its own configuration.

Most suites find their database in the environment, often at import time: ``DATABASE_URL``, the
libpq variables (``PGHOST``...), or names of their own such as ``DATABASE__HOSTNAME``. The
libpq variables and ``DATABASE_URL`` are always given; other names come from templates
(``{host}``, ``{url:asyncpg}``...), see :func:`database_variables`. A variable whose value would
be empty is left out rather than exported empty: ``PGPASSWORD=`` or ``POSTGRES_PASSWORD=`` would
say "no password" where the truth is "none known here" (the server trusts, or a ``.pgpass`` file
holds it), and would hide the suite's own default.

Besides the database, a command ``unmocked run`` starts is given the server itself
(:func:`server_variables`), so that unmocked inside it (its pytest plugin, a nested export) uses
that server, described as it is (``embedded``, its data folder) rather than as a bare URL.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence

import psycopg
from psycopg import pq

from unmocked.errors import ConfigurationError
from unmocked.servers import Server
from unmocked.settings import Settings
from unmocked.urls import database_of, libpq_params, with_database, with_driver

PLACEHOLDERS = ("host", "port", "user", "password", "database", "url")
_PLACEHOLDER = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")
# libpq variables that would send a client elsewhere than the variables unmocked exports.
OVERRIDING = ("PGHOSTADDR", "PGSERVICE", "PGSERVICEFILE", "PGPASSFILE", "PGREQUIREAUTH")
# The server unmocked hands a command, as a description: see server_variables.
SERVER_VARIABLE = "UNMOCKED_SERVER"


def database_variables(
    server_url: str, database: str, templates: Sequence[tuple[str, str]] = ()
) -> dict[str, str]:
    """``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE`` and ``DATABASE_URL``
    for ``database`` on the server of ``server_url``, plus one variable per ``(NAME, TEMPLATE)``.

    A variable whose value would be empty is not given: ``PGPASSWORD`` when the URL carries no
    password (an empty one would make libpq send it instead of using the server's trust or a
    ``.pgpass`` file), and likewise a template such as ``POSTGRES_PASSWORD={password}``
    (:func:`empty_templates` names those). The URL's other libpq keywords (``hostaddr``,
    ``sslmode``...) are given as their variables (``PGHOSTADDR``, ``PGSSLMODE``...), so a client
    of the variables connects as a client of ``DATABASE_URL``.
    """
    url = with_database(server_url, database)
    parts = _parts(url)
    exported = {
        "PGHOST": parts["host"],
        "PGPORT": parts["port"],
        "PGUSER": parts["user"],
        "PGPASSWORD": parts["password"],
        "PGDATABASE": parts["database"],
        "DATABASE_URL": parts["url"],
    }
    exported.update(_other_keywords_as_variables(url))
    for name, template in templates:
        exported[name] = expand(template, parts, name)
    return {name: value for name, value in exported.items() if value}


def empty_templates(
    server_url: str, database: str, templates: Sequence[tuple[str, str]]
) -> list[str]:
    """``NAME={template}`` for each template that :func:`database_variables` leaves out because
    it is empty on this server (``{password}`` on a server whose URL carries none)."""
    parts = _parts(with_database(server_url, database))
    return [f"{name}={template}" for name, template in templates if not expand(template, parts)]


def server_variables(server: Server) -> dict[str, str]:
    """What a command ``unmocked run`` starts needs to use ``server`` itself.

    ``UNMOCKED_DATABASE_URL`` alone would do, but unmocked inside the command would then take the
    server for one given by URL and say so (``(url)``). ``UNMOCKED_SERVER`` describes it as it is;
    :func:`server_from_environment` reads it back while it still names that URL. The command
    never owns it: only the process that started the server stops it.
    """
    return {"UNMOCKED_DATABASE_URL": server.url, SERVER_VARIABLE: server_to_json(server)}


def server_from_environment(settings: Settings, environ: Mapping[str, str]) -> Server | None:
    """The server ``UNMOCKED_SERVER`` describes, when it is still the one at
    ``UNMOCKED_DATABASE_URL`` and fits the settings (their provider and major version); None
    otherwise, and the settings choose as they would without it.

    Also under ``unmocked_provider = embedded`` or ``local``, which ignore the URL: the command
    of ``unmocked run`` must use the run's server, not start a second one beside it.
    """
    described = environ.get(SERVER_VARIABLE)
    if not described or not settings.database_url:
        return None
    try:
        server = server_from_json(described)
        # Compared as libpq reads them: the settings may write the URL back in their own form.
        same = libpq_params(server.url) == libpq_params(settings.database_url)
    except (ValueError, TypeError, KeyError, psycopg.Error):
        return None
    fits = settings.provider in ("auto", "url", server.provider) and settings.pg_version in (
        None,
        server.major,
    )
    return server if same and fits else None


def server_to_json(server: Server) -> str:
    """``server`` for another process, which attaches to it: only this one stops it."""
    return json.dumps(dataclasses.replace(server, owned=False).to_fields())


def server_from_json(text: str) -> Server:
    """The server :func:`server_to_json` described."""
    return Server.from_fields(json.loads(text))


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
