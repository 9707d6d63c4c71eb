"""Saying, once, that the run's server died: one paragraph, then one line for every later test.

A dead server shows up as whatever error unmocked's next use of it meets (a closed connection, a
refused one, a migration cut off). Those errors say nothing useful, and one per test would bury
the cause, so every database request runs inside :meth:`DeathNotice.guard`: an error met while the
server is found dead becomes the paragraph (what died, its log's last lines, what to do); once a
test has been given it, every later request fails at once, in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from unmocked.errors import ServerError, UnmockedError


class DeathNotice:
    """Whether, how and when the server died, as far as a request has found out."""

    def __init__(self, died: Callable[[], str | None], describe: Callable[[], str]) -> None:
        """``died()``: how the server ended, or None while it runs (or nobody can tell);
        ``describe()``: the server in words, for the paragraph."""
        self._died = died
        self._describe = describe
        self._paragraph: str | None = None
        self._during: str | None = None
        self._told = False
        """True once a test was given the paragraph: later ones get one line."""

    @property
    def known(self) -> bool:
        """True once the server was found dead."""
        return self._paragraph is not None

    def check(self, during: str = "") -> ServerError | None:
        """The paragraph on the server's death (remembered), or None while it runs."""
        if self._paragraph is None:
            died = self._died()
            if died is None:
                return None
            self._during = f"during {during}" if during else None
            self._paragraph = (
                f"The PostgreSQL server of this run died{f' during {during}' if during else ''}: "
                f"{self._describe()}; {died}\n"
                "Every later test that needs a database fails at once. If nothing in the tests "
                "killed it (kill -9, the out-of-memory killer), its log says why; run again and "
                "unmocked starts it anew."
            )
        return ServerError(self._paragraph)

    @contextmanager
    def guard(self, during: str = "") -> Iterator[None]:
        """Raise the server's death instead of the errors it causes inside the block."""
        if self._paragraph is not None and self._told:
            raise ServerError(
                f"The PostgreSQL server of this run died {self._during or 'earlier'} (that "
                "error says how, and where its log is): this test needs a database, so it fails "
                "at once."
            )
        try:
            yield
        except (psycopg.Error, UnmockedError):
            death = self.check(during)
            if death is None:
                raise
            self._told = True
            raise death from None
