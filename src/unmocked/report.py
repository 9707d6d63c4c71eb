"""The run's tally, and the lines that tell people about it: one header, one summary.

1. :class:`UnmockedSession <unmocked.session.UnmockedSession>` counts into a :class:`Tally` as
   tests use databases;
2. under pytest-xdist each worker sends its tally to the controller as JSON, which merges them;
3. :func:`header` (once the server and template are ready) and :func:`summary` (at the end) turn
   the server, the template and the tally into lines; the pytest plugin only prints them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from unmocked.fresh.pool import KEEP_AT_MOST
from unmocked.servers import Server
from unmocked.templates import Template
from unmocked.timings import Phases, measured

# Tests named by ``-v``'s summary for the most statements, and again for the most database time.
HEAVIEST = 5


@dataclass
class Tally:
    """What one process's tests used, for the summary; xdist workers' tallies are merged."""

    rollback_tests: int = 0
    fresh_reset: int = 0
    """pg_url tests whose database was put back in place after an earlier test."""
    fresh_cloned: int = 0
    """pg_url tests whose database was cloned for them."""
    reset_unavailable: str | None = None
    """Why pg_url databases were cloned for every test instead of reset, when they were."""
    kept: dict[str, str] = field(default_factory=dict)
    """Databases kept for failed tests: name -> test."""
    kept_discarded: int = 0
    """Failed tests whose database was not kept, past :data:`KEEP_AT_MOST`."""
    database_seconds: float = 0.0
    rebuilt_after_escape: list[str] = field(default_factory=list)
    template_fingerprint: str | None = None
    template_build_seconds: float | None = None
    """None while the template was only reused."""
    phases: Phases = field(default_factory=Phases)
    """Time per phase (start, migrate, clone...), shown by ``pytest -v``."""
    heaviest: list[tuple[str, int, float]] = field(default_factory=list)
    """``(test, statements, seconds in the database)`` of the tests that sent the most statements
    and of those that spent the most time on them, :data:`HEAVIEST` of each (``pytest -v``)."""

    @property
    def fresh_databases(self) -> int:
        """Tests that used pg_url: each got a database either reset or cloned."""
        return self.fresh_reset + self.fresh_cloned

    @contextmanager
    def database_time(self) -> Iterator[None]:
        """Count the block's time as time spent on databases (cloning, resetting, dropping)."""

        def add(seconds: float) -> None:
            self.database_seconds += seconds

        with measured(add):
            yield

    def note_template(self, template: Template) -> None:
        self.template_fingerprint = template.fingerprint
        if not template.reused:
            self.template_build_seconds = template.seconds
            self.phases.record("migrate", template.seconds)

    def note_test(self, test: str, statements: int, seconds: float) -> None:
        """What one test's code sent, for ``-v``'s heaviest tests."""
        if statements:
            self.heaviest = _heaviest([*self.heaviest, (test, statements, seconds)])

    def merge(self, other: Tally) -> None:
        """Add another process's tally (an xdist worker's) to this one."""
        self.rollback_tests += other.rollback_tests
        self.fresh_reset += other.fresh_reset
        self.fresh_cloned += other.fresh_cloned
        self.reset_unavailable = self.reset_unavailable or other.reset_unavailable
        self.kept.update(other.kept)
        self.kept_discarded += other.kept_discarded
        self.database_seconds += other.database_seconds
        self.rebuilt_after_escape += other.rebuilt_after_escape
        self.template_fingerprint = self.template_fingerprint or other.template_fingerprint
        if other.template_build_seconds is not None:
            self.template_build_seconds = other.template_build_seconds
        self.phases.merge(other.phases)
        self.heaviest = _heaviest(self.heaviest + other.heaviest)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Tally:
        fields = json.loads(text)
        fields["phases"] = Phases(**fields["phases"])
        fields["heaviest"] = [tuple(test) for test in fields["heaviest"]]
        return cls(**fields)


def header(server: Server, template: Template | None, seconds: float) -> str:
    """The line once the server and template are ready: ``unmocked: PostgreSQL 18.6 (embedded,
    /dev/shm), template db045a reused, ready in 0.21 s``; then, when the run uses another server
    than the default, a second line saying why (:attr:`Server.reason`)."""
    parts = [f"unmocked: {server.describe()}"]
    if template is not None:
        how = "reused" if template.reused else f"built in {template.seconds:.2f} s"
        parts.append(f"template {template.fingerprint[:6]} {how}")
    parts.append(f"ready in {seconds:.2f} s")
    line = ", ".join(parts)
    return f"{line}\nunmocked: {server.reason}" if server.reason else line


def summary(server: Server, tally: Tally, verbose: bool = False) -> list[str]:
    """The lines for the end of a run: server, template, what the tests used; with ``verbose``,
    where the database time went and the account PostgreSQL runs as.

    None when nothing was used: a run whose server was started for tests that then asked for no
    database (deselected, skipped) learns nothing from a line repeating the header.
    """
    lines = []
    used = tally.rollback_tests or tally.fresh_databases
    if used or tally.template_fingerprint is not None:
        parts = [f"unmocked: {server.describe()}"]
        if tally.template_fingerprint is not None:
            built = tally.template_build_seconds
            how = "reused" if built is None else f"built in {built:.2f} s"
            parts.append(f"template {tally.template_fingerprint[:6]} {how}")
        if tally.rollback_tests:
            parts.append(_counted(tally.rollback_tests, "rollback test"))
        if tally.fresh_databases:
            parts.append(
                f"{_counted(tally.fresh_databases, 'fresh database')} "
                f"({tally.fresh_reset} reset, {tally.fresh_cloned} cloned)"
            )
        if used:
            parts.append(f"database time {tally.database_seconds:.2f} s")
        lines.append(", ".join(parts))
    if tally.reset_unavailable and tally.fresh_databases:
        lines.append(
            f"unmocked: pg_url databases were cloned for every test, not reset: "
            f"{tally.reset_unavailable}"
        )
    for name, test in sorted(tally.kept.items(), key=lambda item: item[1]):
        lines.append(f"unmocked: kept the database of failed {test}: unmocked psql {name}")
    if tally.kept_discarded == 1:
        lines.append(
            f"unmocked: 1 more failed test's database was not kept (at most {KEEP_AT_MOST} per "
            "process)"
        )
    elif tally.kept_discarded:
        lines.append(
            f"unmocked: {tally.kept_discarded} more failed tests' databases were not kept "
            f"(at most {KEEP_AT_MOST} per process)"
        )
    if verbose and tally.phases.seconds:
        lines.append(f"unmocked: {tally.phases.describe()}")
    if verbose and tally.heaviest:
        lines.extend(_heaviest_lines(tally.heaviest))
    account = _account_running(server) if verbose else None
    if account is not None:
        lines.append(
            f"unmocked: PostgreSQL runs as user {account!r}, because it refuses to run as root"
        )
    return lines


def _heaviest(tests: list[tuple[str, int, float]]) -> list[tuple[str, int, float]]:
    """The :data:`HEAVIEST` tests by statements and the :data:`HEAVIEST` by database time."""
    by_count = sorted(tests, key=lambda test: (-test[1], test[0]))[:HEAVIEST]
    by_time = sorted(tests, key=lambda test: (-test[2], test[0]))[:HEAVIEST]
    return list(dict.fromkeys(by_count + by_time))


def _heaviest_lines(tests: list[tuple[str, int, float]]) -> list[str]:
    lines = ["unmocked: the tests that sent the most statements:"]
    for test, count, seconds in sorted(tests, key=lambda test: (-test[1], test[0]))[:HEAVIEST]:
        lines.append(f"  {count:>6}  {test} ({seconds * 1000:.1f} ms in the database)")
    lines.append("unmocked: the tests whose statements took the most database time:")
    for test, count, seconds in sorted(tests, key=lambda test: (-test[2], test[0]))[:HEAVIEST]:
        lines.append(f"  {seconds * 1000:>7.1f} ms  {test} ({_counted(count, 'statement')})")
    return lines


def _account_running(server: Server) -> str | None:
    """The account a server unmocked runs on this machine runs as, when we are root (its data
    folder is that account's); None otherwise."""
    if os.geteuid() != 0 or server.data_dir is None:
        return None
    try:
        uid = os.lstat(server.data_dir).st_uid
        return None if uid == 0 else pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return None


def _counted(count: int, thing: str) -> str:
    """``1 fresh database``, ``2 fresh databases``."""
    return f"{count} {thing}" if count == 1 else f"{count} {thing}s"
