"""The checks a whole suite gets from its ini file, without a test asking: N+1 and index guards.

After each test that passed, the statements its code sent (as the ``queries`` fixture records them)
are looked at as the settings say:

1. ``unmocked_n_plus_one`` (``warn`` unless ``off``): one ``SELECT`` shape sent
   ``unmocked_n_plus_one_threshold`` times or more is an N+1. Only reads of tables count: a test
   that inserts its rows one by one, or sets a setting per transaction, has a loop, not an N+1,
   and nobody asked for a budget;
2. ``unmocked_indexed_tables``: every statement that must read one of those tables in full is
   explained (see :mod:`unmocked.checks.plans`), and reported as ``unmocked_indexed`` says.

Each finding says the test, the statement and the user's line; the plugin turns it into an
``UnmockedWarning`` at that line, or the test's failure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from unmocked.checks.explaining import Explainer, unindexed
from unmocked.checks.queries import n_plus_one, repeated
from unmocked.checks.recording import Line, Statement
from unmocked.settings import Settings

_READS = ("select", "with", "(")
# A locking read (SELECT ... FOR UPDATE) per call takes locks, it does not load related rows.
_LOCKING = re.compile(r"\bfor\s+(?:no\s+key\s+)?(?:update|share|key\s+share)\b", re.IGNORECASE)
_FROM = re.compile(r"\bfrom\b", re.IGNORECASE)


def _reads_a_table(statement: Statement) -> bool:
    """A query with a FROM that takes no lock: ``SELECT set_config(...)`` or ``SELECT
    nextval(...)`` per row loads no rows, and ``SELECT ... FOR UPDATE`` per call locks them."""
    text = statement.sql.lstrip().lower()
    reads = text.startswith("table") or (text.startswith(_READS) and bool(_FROM.search(text)))
    return reads and not _LOCKING.search(text)


@dataclass(frozen=True)
class Finding:
    """What one check found in one test."""

    message: str
    fails: bool
    """True when the setting says ``fail``; a warning otherwise."""
    line: Line | None
    """The user's line the first statement found was sent from."""


def watching(settings: Settings) -> bool:
    """Whether any check of the suite needs each test's statements."""
    return settings.n_plus_one != "off" or bool(settings.indexed_tables)


def findings(
    settings: Settings, statements: Sequence[Statement], explainer: Explainer
) -> list[Finding]:
    """What the suite's checks find in one test's ``statements``."""
    found = []
    # Fewer statements than the threshold cannot hold an N+1: most tests, checked for nothing.
    if settings.n_plus_one != "off" and len(statements) >= settings.n_plus_one_threshold:
        reads = [s for s in statements if _reads_a_table(s)]
        same = repeated(reads, settings.n_plus_one_threshold)
        message = n_plus_one(same, settings.n_plus_one_threshold)
        if message:
            found.append(
                Finding(
                    f"{message} (unmocked_n_plus_one = {settings.n_plus_one})",
                    settings.n_plus_one == "fail",
                    next((s.line for s in same if s.line), None),
                )
            )
    if settings.indexed_tables:
        reads_in_full = explainer.full_reads(statements, settings.indexed_tables)
        if reads_in_full:
            found.append(
                Finding(
                    f"{unindexed(reads_in_full, settings.indexed_tables)} "
                    f"(unmocked_indexed_tables, unmocked_indexed = {settings.indexed})",
                    settings.indexed == "fail",
                    next((s.line for s, _ in reads_in_full if s.line), None),
                )
            )
    return found
