"""When the run prints its lines: the header before the first test, the summary at the end.

Both only when a test asked for unmocked's databases: a suite that never does sees no line of
unmocked's.

The header comes once the server and template are ready, before the first test: the run prepares
them as soon as collection shows a test that asks for a database (see
:func:`~unmocked.plugin._shared.asks_for_a_database`), so a run that needs no database starts
none, and the first test does not carry the start-up's time. A slow build (or a wait for another
run's) says how it goes before that, through the terminal reporter, also when a fixture builds
the template while pytest captures the test's output. Under pytest-xdist the controller starts
the server once the workers' collection asks for it (:mod:`unmocked.plugin._handover`), and the
workers build the template, so its header names the server only; the summary line names the
template the workers used. The summary is printed when something was used (see
:func:`unmocked.report.summary`). The lines themselves are written by :mod:`unmocked.report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import pytest

from unmocked.build_watch import progress_lines_to
from unmocked.errors import UnmockedError
from unmocked.plugin._shared import SESSION_KEY, asks_for_a_database
from unmocked.session import UnmockedSession

HEADER_KEY = pytest.StashKey[str]()
PROGRESS_KEY = pytest.StashKey[ExitStack]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Send the progress lines of template builds to the terminal for the rest of the run."""
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    # An xdist worker's terminal output reaches nobody; its standard error does (the default).
    if reporter is None or hasattr(config, "workerinput"):
        return
    capture = config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled() if capture else nullcontext():
            reporter.write_line(line)

    stack = ExitStack()
    stack.enter_context(progress_lines_to(write))
    config.stash[PROGRESS_KEY] = stack


def pytest_unconfigure(config: pytest.Config) -> None:
    stack = config.stash.get(PROGRESS_KEY, None)
    if stack is not None:
        stack.close()
        del config.stash[PROGRESS_KEY]


@pytest.hookimpl(tryfirst=True)  # before the terminal reporter asks for the header, below
def pytest_collection_finish(session: pytest.Session) -> None:
    """Prepare the server and template now if a collected test will ask for a database."""
    config = session.config
    unmocked = config.stash.get(SESSION_KEY, None)
    if (
        unmocked is None
        or config.option.collectonly
        # An xdist worker: the controller starts the server only after this (plugin.__init__).
        or hasattr(config, "workerinput")
        or not any(asks_for_a_database(item) for item in session.items)
    ):
        return
    try:
        config.stash[HEADER_KEY] = unmocked.ready(template=not _migrations_chosen_later(config))
    except UnmockedError:
        return  # each test that needs the database fails with the error, as one paragraph


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: Path, items: Sequence[pytest.Item]
) -> list[str]:
    header = config.stash.get(HEADER_KEY, None)
    return [header] if header else []


def say_header(config: pytest.Config, header: str) -> None:
    """xdist controller: say the header once it started the server for the workers."""
    config.stash[HEADER_KEY] = header
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(header)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The summary line, when something was used; with -v, where the database time went."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None or not session.started:
        return
    for line in session.summary(verbose=config.getoption("verbose") > 0):
        terminalreporter.write_line(line)


def _migrations_chosen_later(config: pytest.Config) -> bool:
    """True when Django's migrations build the template: chosen by a session fixture, later."""
    session: UnmockedSession = config.stash[SESSION_KEY]
    return config.pluginmanager.has_plugin("unmocked-django") and not session.settings.migrations
