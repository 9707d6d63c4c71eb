"""The pytest plugin: options, configuration and xdist wiring over :class:`UnmockedSession`.

Wiring only; everything it does can be done from plain Python with the library. Its modules:

- here: the ``--unmocked-*`` options and ini keys, one :class:`UnmockedSession` per process
  (made in ``pytest_configure``), and xdist: once the workers' collection shows a test that
  asks for a database, the controller starts the server and hands it to them
  (:mod:`~unmocked.plugin._handover`), and they hand their tallies back;
- :mod:`~unmocked.plugin.fixtures`: ``pg_server``, ``pg``, ``sa_engine``, ``sa_session``,
  ``pg_url``;
- :mod:`~unmocked.plugin.async_fixtures`: ``apg``, ``sa_async_session`` and the SQLModel twins;
- :mod:`~unmocked.plugin.checks`: ``queries``, the statements a test sends and checks over them;
- :mod:`~unmocked.plugin.django`: pytest-django's database fixtures on unmocked's server;
- :mod:`~unmocked.plugin.factories`: ``factory_session`` for factory_boy;
- :mod:`~unmocked.plugin.mongo`: ``mongo_db``, ``mongo_db_async``, ``mongo_url``, which start
  no PostgreSQL;
- :mod:`~unmocked.plugin.env`: the ``unmocked_export_env`` option;
- :mod:`~unmocked.plugin.report`: the header and summary lines.

See :mod:`unmocked.isolation` for what rollback isolation keeps and what it cannot.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from unmocked.errors import UnmockedError
from unmocked.export.variables import server_from_environment
from unmocked.plugin._handover import Handover
from unmocked.plugin._shared import (
    SESSION_KEY,
    asks_for_a_database,
    reported_as_failures,
)
from unmocked.plugin.report import say_header
from unmocked.report import Tally
from unmocked.session import UnmockedSession
from unmocked.settings import OPTIONS, Settings

# Fixture and framework modules: the framework ones register nothing unless their framework is
# installed and configured.
pytest_plugins = [
    "unmocked.plugin.fixtures",
    "unmocked.plugin.env",
    "unmocked.plugin.report",
    "unmocked.plugin.django",
    "unmocked.plugin.factories",
    "unmocked.plugin.async_fixtures",
    "unmocked.plugin.checks",
    "unmocked.plugin.mongo",
]

WORKER_INPUT_KEY = "unmocked_handover"
# The controller's run id, which its workers' connections are counted under together
# (unmocked_max_connections caps the whole run, see unmocked.connection_budget).
RUN_GROUP_KEY = "unmocked_run_group"
WORKER_OUTPUT_KEY = "unmocked_tally"
HANDOVER_KEY = pytest.StashKey[Handover]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unmocked", "real PostgreSQL databases for tests")
    for ini_key, _env_key, help_text in OPTIONS:
        group.addoption(
            f"--{ini_key.replace('_', '-')}", dest=ini_key, default=None, help=help_text
        )
        parser.addini(ini_key, help_text, default="")


def pytest_configure(config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:  # made earlier by plugin.env, to export its database
        return
    flags = {ini_key: config.getoption(ini_key) for ini_key, _, _ in OPTIONS}
    ini = {ini_key: config.getini(ini_key) for ini_key, _, _ in OPTIONS}
    try:
        settings = Settings.from_values(flags, os.environ, Path(config.rootpath), ini)
    except UnmockedError as error:
        raise pytest.UsageError(str(error)) from None
    worker_input = getattr(config, "workerinput", {})
    if WORKER_INPUT_KEY in worker_input:
        handover = config.stash[HANDOVER_KEY] = Handover(Path(worker_input[WORKER_INPUT_KEY]))
        config.stash[SESSION_KEY] = UnmockedSession(
            settings, attach_to=handover.server, run_group=worker_input.get(RUN_GROUP_KEY)
        )
        return
    # Inside `unmocked run`: its server, as what it is rather than as a bare URL.
    attach_to = server_from_environment(settings, os.environ)
    config.stash[SESSION_KEY] = UnmockedSession(settings, attach_to=attach_to)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    try:
        if session is not None:
            session.close()
    finally:
        handover = config.stash.get(HANDOVER_KEY, None)
        if handover is not None:
            handover.close()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook tells the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    """xdist worker: ask the controller for the server if a collected test needs a database."""
    handover = session.config.stash.get(HANDOVER_KEY, None)
    if handover is None or session.config.option.collectonly:
        return
    if any(asks_for_a_database(item) for item in session.items):
        handover.want()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """After each test's teardown, open again what it ended of unmocked's own sessions (a test
    that terminates every other session), warning with its name; two looks at sockets."""
    try:
        return (yield)
    finally:
        session = item.config.stash.get(SESSION_KEY, None)
        if session is not None and session.started:
            with reported_as_failures():
                session.notice_lost_sessions(item.nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: name the hand-over folder to each worker; nothing starts yet."""
    config: pytest.Config = node.config
    handover = config.stash.get(HANDOVER_KEY, None)
    if handover is None:
        handover = config.stash[HANDOVER_KEY] = Handover.made()
        session = config.stash[SESSION_KEY]
        if session.started:  # the exported database's (plugin.env): the workers share it
            handover.give(session.server)
    node.workerinput[WORKER_INPUT_KEY] = str(handover.folder)
    node.workerinput[RUN_GROUP_KEY] = config.stash[SESSION_KEY].budget.run_group


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """xdist controller, before any test is handed out: start the server once if a worker's
    collection asked for it, and hand it over, or why it could not start."""
    config: pytest.Config = node.config
    handover = config.stash.get(HANDOVER_KEY, None)
    if handover is None or handover.answered or not handover.wanted:
        return
    session = config.stash[SESSION_KEY]
    try:
        # The template is left to the workers: building it here would import the migrations
        # (a project's models) in a process that collected nothing.
        header = session.ready(template=False)
    except UnmockedError as error:
        handover.refuse(str(error))  # each test that needs a database fails with it
        return
    handover.give(session.server)
    say_header(config, header)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: add a finished worker's tally to the run's summary."""
    report = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if report:
        node.config.stash[SESSION_KEY].tally.merge(Tally.from_json(report))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """xdist worker: hand this worker's tally to the controller (sent after this hook)."""
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        worker_output[WORKER_OUTPUT_KEY] = session.config.stash[SESSION_KEY].tally.to_json()
