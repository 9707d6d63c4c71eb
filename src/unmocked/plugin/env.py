"""The ``unmocked_export_env`` option: a database in the environment before conftest.py runs.

Suites that read ``DATABASE_URL`` or the libpq variables at import time need them before pytest
imports the rootdir's ``conftest.py`` files (and before pytest-django imports the settings), so
the export happens in a ``pytest_load_initial_conftests`` wrapper, which runs ahead of both.

Under pytest-xdist a worker receives its ``workerinput`` only after its conftest files are
imported, too late to find the server through it. The controller therefore leaves the server's
description in ``UNMOCKED_EXPORTED_SERVER``, which workers inherit with the rest of its
environment; with ``unmocked_env_database = per-worker`` each worker then clones and exports a
database of its own, otherwise the workers keep the controller's variables.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

from unmocked.errors import UnmockedError
from unmocked.export import ExportedDatabase
from unmocked.export.variables import (
    OVERRIDING,
    server_from_environment,
    server_from_json,
    server_to_json,
)
from unmocked.plugin._shared import SESSION_KEY
from unmocked.session import UnmockedSession
from unmocked.settings import OPTIONS, Settings

SERVER_VARIABLE = "UNMOCKED_EXPORTED_SERVER"
EXPORT_KEY = pytest.StashKey[ExportedDatabase]()
SAVED_ENVIRON_KEY = pytest.StashKey[dict[str, str | None]]()


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, None, None]:
    try:
        export = _export(early_config)
    except UnmockedError as error:
        raise pytest.UsageError(str(error)) from None
    if export is not None:
        early_config.stash[SESSION_KEY] = export.session
        early_config.stash[EXPORT_KEY] = export
        exported = dict(export.variables)
        if not os.environ.get("PYTEST_XDIST_WORKER"):
            exported[SERVER_VARIABLE] = server_to_json(export.session.server)
        early_config.stash[SAVED_ENVIRON_KEY] = {
            name: os.environ.get(name) for name in (*exported, *OVERRIDING)
        }
        for name in OVERRIDING:
            os.environ.pop(name, None)
        os.environ.update(exported)
    return (yield)


def _export(config: pytest.Config) -> ExportedDatabase | None:
    """The database this process exports, or None when it has nothing to export itself."""
    flags = {key: getattr(config.known_args_namespace, key, None) for key, _, _ in OPTIONS}
    ini = {key: config.getini(key) for key, _, _ in OPTIONS}
    settings = Settings.from_values(flags, os.environ, config.rootpath, ini)
    if not settings.export_env:
        return None
    worker = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    controllers_server = os.environ.get(SERVER_VARIABLE) if worker else None
    if controllers_server is not None and settings.env_database == "shared":
        return None  # the controller's variables, inherited
    attach_to = (
        server_from_json(controllers_server)
        if controllers_server
        else server_from_environment(settings, os.environ)  # inside `unmocked run`
    )
    session = UnmockedSession(settings, attach_to=attach_to)
    try:
        # Only the controller watches for databases the suite creates: it outlives the workers.
        return ExportedDatabase(session, settings.env, watch_leftovers=not worker)
    except BaseException:
        session.close()
        raise


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the exported database after the last fixture (and xdist worker) is done with it."""
    export = session.config.stash.get(EXPORT_KEY, None)
    if export is not None:
        export.close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    export = config.stash.get(EXPORT_KEY, None)
    if export is None:
        return
    for note in [export.left_out, *export.notes] if export.left_out else export.notes:
        terminalreporter.write_line(f"unmocked: {note}")


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the export if the session never finished; give back the environment we changed."""
    export = config.stash.get(EXPORT_KEY, None)
    if export is not None:
        export.close()
    for name, value in config.stash.get(SAVED_ENVIRON_KEY, {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
