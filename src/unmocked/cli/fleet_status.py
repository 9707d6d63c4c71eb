"""``unmocked status``'s listing of a server's runs, databases, templates and connections.

Plain aligned text for one screen: the runs alive (host, pid, user, start, connections, their
databases), the databases a collection would drop, those kept for failed tests, the templates,
and the server's connections against its limit. Read by :func:`unmocked.fleet.look`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from unmocked.fleet import Database, Fleet
from unmocked.ownership import age_in_words

# Databases listed under one run at most: a run of many workers' databases stays on one screen.
_DATABASES_PER_RUN = 6


def lines(fleet: Fleet, now: float | None = None) -> list[str]:
    """The listing, line by line."""
    now = time.time() if now is None else now
    of_runs = fleet.in_use - fleet.others
    out = [
        f"connections: {fleet.in_use} of {fleet.limit.slots} in use ({fleet.limit.words}): "
        f"{of_runs} of unmocked's runs, {fleet.others} other(s)",
        "",
        f"runs alive: {len(fleet.runs)}",
    ]
    rows = []
    for run in fleet.runs:
        said = run.process
        started = f"{age_in_words(now - run.started.timestamp())} ago" if run.started else "?"
        rows.append(
            [
                run.run,
                said.host if said else "?",
                str(said.pid) if said else "?",
                said.user if said else "?",
                started,
                str(run.connections),
                str(len(run.databases)),
            ]
        )
    out += _table(["RUN", "HOST", "PID", "USER", "STARTED", "CONNECTIONS", "DATABASES"], rows)
    for run in fleet.runs:
        if run.databases:
            out.append(f"  {run.run}:")
            out += [f"  {line}" for line in _databases(run.databases[:_DATABASES_PER_RUN])]
            if len(run.databases) > _DATABASES_PER_RUN:
                out.append(f"    ... and {len(run.databases) - _DATABASES_PER_RUN} more")
    out += ["", f"databases of runs no longer alive (gc drops them): {len(fleet.abandoned)}"]
    out += [f"  {line}" for line in _databases(fleet.abandoned, connected_keeps=True)]
    out += ["", f"kept for failed tests: {len(fleet.kept)}"]
    out += _table(
        ["DATABASE", "TEST", "KEPT", "SIZE"],
        [
            [
                kept.name,
                kept.owner.test or "?",
                f"{age_in_words(now - (kept.owner.since or now))} ago",
                _size(kept.size),
            ]
            for kept in fleet.kept
        ],
    )
    out += ["", f"templates: {len(fleet.templates)}"]
    out += _table(
        ["FINGERPRINT", "SIZE", "LAST USED", "IN USE"],
        [
            [
                (template.owner.fingerprint or "?")[:12],
                _size(template.size),
                f"{age_in_words(now - template.owner.used)} ago" if template.owner.used else "?",
                "yes" if template.in_use else "no",
            ]
            for template in fleet.templates
        ],
    )
    return out


def _databases(databases: Sequence[Database], connected_keeps: bool = False) -> list[str]:
    rows = []
    for database in databases:
        sessions = f"{database.sessions} session(s)" if database.sessions else ""
        if sessions and connected_keeps:
            sessions += ": gc keeps it"
        rows.append([database.name, database.owner.kind, _size(database.size), sessions])
    return [line.rstrip() for line in _table([], rows)]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """``rows`` in columns as wide as their widest cell, under ``header`` (none when empty)."""
    if not rows:
        return []
    every = [header, *rows] if header else rows
    widths = [max(len(row[column]) for row in every) for column in range(len(every[0]))]
    return [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in every
    ]


def _size(size: int | None) -> str:
    """``8.1 MB``: bytes as people read them; ``?`` when unknown."""
    if size is None:
        return "?"
    if size < 1024:
        return f"{size} B"
    scaled = float(size)
    for unit in ("kB", "MB", "GB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GB":
            break
    return f"{scaled:.1f} {unit}"
