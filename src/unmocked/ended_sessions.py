"""Telling which test ended unmocked's own sessions on the server, once they are open again.

A test that runs ``pg_terminate_backend`` on every other session also ends unmocked's lease and
admin session. The session opens them again (:meth:`unmocked.session.UnmockedSession.
notice_lost_sessions`); this module remembers what was ended and by whom, and warns once the
test's databases are done with, naming the test. The culprit is not always the test at hand: a
session is seen ended a moment after ``pg_terminate_backend`` returned, so often by the next test.
"""

from __future__ import annotations

import warnings

from unmocked.errors import UnmockedWarning


class EndedSessions:
    """What a test ended of unmocked's own sessions, not yet warned about."""

    def __init__(self) -> None:
        self._ended: set[str] = set()
        self._ended_by: str | None = None
        self._last_test: str | None = None

    def note(self, lease: bool, admin: bool, ended_by: str | None = None) -> None:
        """Remember that the lease and/or the admin session were found ended (and opened again),
        by ``ended_by`` when that was not the test at hand."""
        if not self._ended:
            self._ended_by = ended_by
        self._ended.update(
            what for what, lost in (("its lease", lease), ("its admin session", admin)) if lost
        )

    def test_before(self, test_name: str) -> str:
        """Who to blame for sessions found ended as ``test_name`` begins: the test before it."""
        return self._last_test or f"a test or fixture before {test_name or 'this test'}"

    def forget(self) -> None:
        """Drop what was noted: at the end of the run there is nobody left to tell."""
        self._ended.clear()

    def tell(self, test_name: str) -> None:
        """At the end of ``test_name``: warn of the sessions noted ended, naming who ended them."""
        self._last_test = test_name or self._last_test
        if not self._ended:
            return
        ended = " and ".join(sorted(self._ended, reverse=True))
        culprit = self._ended_by or test_name or "a test"
        self._ended.clear()
        warnings.warn(
            f"{culprit} ended unmocked's own sessions on the server ({ended}; "
            "pg_terminate_backend of every other session?). unmocked opened them again and took "
            "the lease again, which tells other runs that this run is alive: until then another "
            "run could take it for dead and drop its idle databases, which are cloned anew. End "
            "only the sessions of the test's own database (WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()).",
            UnmockedWarning,
            stacklevel=3,
        )
