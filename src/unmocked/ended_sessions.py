"""Telling which test ended unmocked's own sessions on the server, once they are open again.

A test that runs ``pg_terminate_backend`` on every other session also ends unmocked's admin session,
which holds the run's lease. The session opens it again
(:meth:`unmocked.session.UnmockedSession.notice_lost_sessions`); this module remembers what was
ended and by whom, and warns once the test's databases are done with, naming the test. The culprit
is not always the test at hand: a session is seen ended a moment after ``pg_terminate_backend``
returned, so often by the next test.
"""

from __future__ import annotations

import warnings

from unmocked.errors import UnmockedWarning


class EndedSessions:
    """Whether a test ended unmocked's admin session, not yet warned about, and who."""

    def __init__(self) -> None:
        self._ended = False
        self._ended_by: str | None = None
        self._last_test: str | None = None

    def note(self, ended_by: str | None = None) -> None:
        """Remember that the admin session was found ended (and opened again), by ``ended_by``
        when that was not the test at hand."""
        if not self._ended:
            self._ended_by = ended_by
        self._ended = True

    def test_before(self, test_name: str) -> str:
        """Who to blame for sessions found ended as ``test_name`` begins: the test before it."""
        return self._last_test or f"a test or fixture before {test_name or 'this test'}"

    def forget(self) -> None:
        """Drop what was noted: at the end of the run there is nobody left to tell."""
        self._ended = False

    def tell(self, test_name: str) -> None:
        """At the end of ``test_name``: warn of the session noted ended, naming who ended it."""
        self._last_test = test_name or self._last_test
        if not self._ended:
            return
        culprit = self._ended_by or test_name or "a test"
        self._ended = False
        warnings.warn(
            f"{culprit} ended unmocked's own sessions on the server (its admin session, which "
            "holds the run's lease; pg_terminate_backend of every other session?). unmocked "
            "opened it again and took the lease again, which tells other runs that this run is "
            "alive: until then another run could take it for dead and drop its idle databases, "
            "which are cloned anew. End only the sessions of the test's own database (WHERE "
            "datname = current_database() AND pid <> pg_backend_pid()).",
            UnmockedWarning,
            stacklevel=3,
        )
