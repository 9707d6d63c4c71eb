"""The issue's target table (round two): each row's peer and unmocked figures, the ratio, verdict.

Every figure comes from the benchmark modules' results; nothing here measures. Some rows are
shown in more than one way, each labelled, because the target as written and the cost it is
about differ: ``pg`` "over bare" also holds the test's own database work, which no isolation can
remove, so it is shown over ``shared`` (the same work, no isolation) too; summed RSS counts
shared_buffers once per backend, so summed PSS is shown too. xdist is judged on tests that each
do ~10 ms of database work, against bare pytest's speed-up on the same tests sleeping as long:
the fast ``pg`` suite's ratios, where xdist's start-up outweighs the tests, are kept for reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from isolation import ModeResult, ratio
from memory import MemoryResult
from parallel import ParallelResult
from startup import StartupResult

NONE = "-"


@dataclass(frozen=True)
class Row:
    """One line of the table, already formatted."""

    what: str
    peer: str
    unmocked: str
    ratio: str
    target: str
    verdict: str


def at_most(value: float, limit: float, unit: str, digits: int = 2) -> str:
    """``met`` when ``value <= limit``, else by how much it is over."""
    if value <= limit:
        return "met"
    return f"missed by {value - limit:.{digits}f} {unit}"


def at_least(value: float, limit: float) -> str:
    """``met`` when the ratio ``value >= limit``, else by how much it falls short."""
    if value >= limit:
        return "met"
    return f"missed by {limit - value:.2f}x"


def _divide(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _ms(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f} ms"


# Round two's targets (the issue "Speed, round two"), in ms a test over the floor named.
PG_URL_OVER_BARE_MS = 5.0
PG_URL_TIMES_LESS_THAN_PEER = 20.0
ROLLBACK_TARGETS = (
    # (mode, floor, at most ms, what it is)
    ("pg", "shared", 0.3, "rollback per test"),
    ("sa_session", "sa_shared", 0.7, "rollback per test"),
    ("apg", "async_shared", 0.7, "rollback per test"),
    ("sa_async_session", "sa_async_shared", 0.7, "rollback per test (asyncpg)"),
    ("sa_async_session-psycopg", "sa_async_shared-psycopg", 0.7, "rollback per test"),
)
# Shown for reference, with no target of their own: what the database work adds over bare.
OVER_BARE_ONLY = ("pg", "sa_session", "apg", "sa_async_session")
COLD_START_SECONDS = 1.0
WARM_START_SECONDS = 0.15
XDIST_SHARE_OF_BARE_SPEED_UP = 0.9
MEMORY_RSS_MB = 250


def per_test_rows(results: list[ModeResult]) -> list[Row]:
    """What one more test costs, from the per-test benchmark: ``pg_url`` over bare and against
    its peer, each rollback mode over its floor, and (for reference) over bare."""
    by_mode = {result.mode: result for result in results}

    def over(mode: str, floor: str) -> float | None:
        if mode not in by_mode or floor not in by_mode:
            return None
        return by_mode[mode].per_test_ms - by_mode[floor].per_test_ms

    rows = []
    pg_url, peer = over("pg_url", "bare"), over("pytest-postgresql", "bare")
    if pg_url is not None and peer is not None:
        times_less = _divide(peer, pg_url) or 0.0
        misses = [
            verdict
            for verdict in (
                at_most(pg_url, PG_URL_OVER_BARE_MS, "ms"),
                at_least(times_less, PG_URL_TIMES_LESS_THAN_PEER),
            )
            if verdict != "met"
        ]
        rows.append(
            Row(
                "pg_url: fresh database per test, over bare",
                f"{_ms(peer)} (pytest-postgresql)",
                _ms(pg_url),
                ratio(times_less),
                f"<= {PG_URL_OVER_BARE_MS:g} ms and ratio >= {PG_URL_TIMES_LESS_THAN_PEER:g}x",
                "; ".join(misses) or "met",
            )
        )
    truncate = over("truncate", "shared")
    for mode, floor, limit, what in ROLLBACK_TARGETS:
        cost = over(mode, floor)
        if cost is None:
            continue
        # TRUNCATE is a peer of the sync psycopg path only: it does the same statements.
        peer_cost = truncate if mode == "pg" else None
        rows.append(
            Row(
                f"{mode}: {what}, over {floor}",
                f"{_ms(peer_cost)} (TRUNCATE)" if peer_cost is not None else NONE,
                _ms(cost),
                ratio(_divide(peer_cost, cost)),
                f"<= {limit:g} ms",
                at_most(cost, limit, "ms"),
            )
        )
    for mode in OVER_BARE_ONLY:
        cost = over(mode, "bare")
        if cost is not None:
            rows.append(
                Row(f"{mode}: per test over bare (reference)", NONE, _ms(cost), NONE, NONE, NONE)
            )
    return rows


def startup_rows(result: StartupResult) -> list[Row]:
    """One-test runs minus a bare one-test run, on the 80-table schema."""
    peer = result.peer_cold_over_bare
    peer_text = f"{peer:.2f} s (pytest-postgresql)" if peer is not None else result.peer_note
    return [
        Row(
            "cold start, 1 test, 80 tables, over bare",
            peer_text,
            f"{result.cold_over_bare:.2f} s",
            ratio(_divide(peer, result.cold_over_bare)),
            f"<= {COLD_START_SECONDS:g} s",
            at_most(result.cold_over_bare, COLD_START_SECONDS, "s"),
        ),
        Row(
            "cold start: testcontainers",
            result.testcontainers_note,
            NONE,
            NONE,
            NONE,
            NONE,
        ),
        Row(
            "warm start, 1 test, 80 tables, over bare",
            NONE,
            f"{result.warm_over_bare:.2f} s",
            NONE,
            f"<= {WARM_START_SECONDS:g} s",
            at_most(result.warm_over_bare, WARM_START_SECONDS, "s"),
        ),
    ]


def parallel_rows(result: ParallelResult) -> list[Row]:
    """The judged row: the ~10 ms database-work suite's ``-n 2`` speed-up as a share of bare
    pytest's on its sleeping twin; then, for reference, the fast ``pg`` suite's three ratios and
    the ceiling xdist's overhead leaves it."""
    work = result.work
    rows = []
    if work is not None:
        share = work.share_of_bare_speed_up()
        rows.append(
            Row(
                f"xdist -n 2 vs -n 0, {work.tests} tests of ~{work.work_ms:.0f} ms database work, "
                "wall time",
                f"{ratio(work.speed_up('sleep'))} (bare pytest, "
                f"time.sleep({work.sleep_seconds * 1000:.1f} ms))",
                f"{ratio(work.speed_up('db'))} ({work.median('db', 0):.2f} s -> "
                f"{work.median('db', 2):.2f} s)",
                f"{share:.0%} of bare's",
                f">= {XDIST_SHARE_OF_BARE_SPEED_UP:.0%} of bare's",
                "met"
                if share >= XDIST_SHARE_OF_BARE_SPEED_UP
                else f"missed by {XDIST_SHARE_OF_BARE_SPEED_UP - share:.0%} points",
            )
        )
    for figure, label in (
        ("wall_seconds", "wall time"),
        ("loop_seconds", "test loop"),
        ("span_seconds", "test span"),
    ):
        speed_up = result.speed_up("pg", figure)
        rows.append(
            Row(
                f"xdist -n 2 vs -n 0, {result.tests} fast pg tests, {label} (reference)",
                f"{ratio(result.speed_up('bare', figure))} (bare pytest)",
                f"{ratio(speed_up)} ({result.median('pg', 0, figure):.2f} s -> "
                f"{result.median('pg', 2, figure):.2f} s)",
                NONE,
                NONE,
                NONE,
            )
        )
    rows.append(
        Row(
            f"xdist -n 2 vs -n 0, {result.tests} fast pg tests, best possible here (reference)",
            f"xdist adds {result.xdist_overhead():.2f} s to bare pytest",
            f"{ratio(result.best_speed_up())} at most",
            NONE,
            NONE,
            NONE,
        )
    )
    return rows


def memory_rows(result: MemoryResult) -> list[Row]:
    """Peak summed memory of the server's processes in a two-worker run: RSS judged (the target
    is written in it), PSS reported beside it (what the server really costs)."""
    processes = f"({result.peak_processes} processes at most)"
    what = f"memory, -n 2, {result.tests} pg + pg_url tests, peak summed"
    return [
        Row(
            f"{what} RSS",
            NONE,
            f"{result.peak_rss_mb:.0f} MB {processes}",
            NONE,
            f"< {MEMORY_RSS_MB} MB",
            "met"
            if result.peak_rss_mb < MEMORY_RSS_MB
            else f"missed by {result.peak_rss_mb - MEMORY_RSS_MB:.0f} MB",
        ),
        Row(
            f"{what} PSS", NONE, f"{result.peak_pss_mb:.0f} MB {processes}", NONE, "reported", NONE
        ),
    ]


def render(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    header = Row("row", "peer", "unmocked", "ratio", "target", "verdict")
    cells = [list(vars(row).values()) for row in (header, *rows)]
    widths = [max(len(line[column]) for line in cells) for column in range(len(cells[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
