"""The issue's target table: each row's peer and unmocked figures, their ratio, and the verdict.

Every figure comes from the benchmark modules' results; nothing here measures. Some rows are
shown in more than one way, each labelled, because the target as written and the cost it is
about differ: ``pg`` "over bare" also holds the test's own database work, which no isolation can
remove, so it is shown over ``shared`` (the same work, no isolation) too; summed RSS counts
shared_buffers once per backend, so summed PSS is shown too; xdist's wall time holds its
workers' start-up, so the test span, bare pytest's own speed-up and the best speed-up xdist's
overhead leaves are shown too.
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


def per_test_rows(results: list[ModeResult]) -> list[Row]:
    """Rows 1 and 2: what one more test costs, from the per-test benchmark."""
    by_mode = {result.mode: result for result in results}

    def over(mode: str, floor: str) -> float | None:
        if mode not in by_mode or floor not in by_mode:
            return None
        return by_mode[mode].per_test_ms - by_mode[floor].per_test_ms

    rows = []
    pg_url, peer = over("pg_url", "bare"), over("pytest-postgresql", "bare")
    if pg_url is not None and peer is not None:
        times_less = _divide(peer, pg_url)
        rows.append(
            Row(
                "pg_url: fresh database per test, over bare",
                f"{_ms(peer)} (pytest-postgresql)",
                _ms(pg_url),
                ratio(times_less),
                "ratio >= 10x",
                at_least(times_less or 0.0, 10.0),
            )
        )
    for mode, floor, peer_floor in (
        ("pg", "bare", "bare"),
        ("pg", "shared", "shared"),
        ("sa_session", "bare", None),
        ("sa_session", "sa_shared", None),
    ):
        cost = over(mode, floor)
        if cost is None:
            continue
        truncate = over("truncate", peer_floor) if peer_floor else None
        rows.append(
            Row(
                f"{mode}: rollback per test, over {floor}",
                f"{_ms(truncate)} (TRUNCATE)" if truncate is not None else NONE,
                _ms(cost),
                ratio(_divide(truncate, cost)),
                "<= 0.5 ms",
                at_most(cost, 0.5, "ms"),
            )
        )
    return rows


def startup_rows(result: StartupResult) -> list[Row]:
    """Rows 3 and 4: one-test runs minus a bare one-test run."""
    peer = result.peer_cold_over_bare
    peer_text = f"{peer:.2f} s (pytest-postgresql)" if peer is not None else result.peer_note
    return [
        Row(
            "cold start, 1 test, over bare",
            peer_text,
            f"{result.cold_over_bare:.2f} s",
            ratio(_divide(peer, result.cold_over_bare)),
            "<= 1.5 s",
            at_most(result.cold_over_bare, 1.5, "s"),
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
            "warm start, 1 test, over bare",
            NONE,
            f"{result.warm_over_bare:.2f} s",
            NONE,
            "<= 0.3 s",
            at_most(result.warm_over_bare, 0.3, "s"),
        ),
    ]


def parallel_rows(result: ParallelResult) -> list[Row]:
    """Row 5: ``-n 0`` time divided by ``-n 2`` time; bare pytest's ratio in the peer column."""
    rows = []
    for figure, label in (
        ("wall_seconds", "wall time"),
        ("loop_seconds", "test loop"),
        ("span_seconds", "test span"),
    ):
        speed_up = result.speed_up("pg", figure)
        rows.append(
            Row(
                f"xdist -n 2 vs -n 0, {result.tests} pg tests, {label}",
                f"{ratio(result.speed_up('bare', figure))} (bare pytest)",
                f"{ratio(speed_up)} ({result.median('pg', 0, figure):.2f} s -> "
                f"{result.median('pg', 2, figure):.2f} s)",
                NONE,
                ">= 1.6x",
                at_least(speed_up, 1.6),
            )
        )
    best = result.best_speed_up()
    rows.append(
        Row(
            f"xdist -n 2 vs -n 0, {result.tests} pg tests, best possible here",
            f"xdist adds {result.xdist_overhead():.2f} s to bare pytest",
            f"{ratio(best)} at most",
            NONE,
            ">= 1.6x",
            "out of reach with these tests here" if best < 1.6 else "within reach",
        )
    )
    return rows


def memory_rows(result: MemoryResult) -> list[Row]:
    """Row 6: peak summed memory of the server's processes in a two-worker run."""
    return [
        Row(
            f"memory, -n 2, {result.tests} pg + pg_url tests, peak {label}",
            NONE,
            f"{value:.0f} MB ({result.peak_processes} processes at most)",
            NONE,
            "< 300 MB",
            at_most(value, 300, "MB", digits=0),
        )
        for label, value in (
            ("summed RSS", result.peak_rss_mb),
            ("summed PSS", result.peak_pss_mb),
        )
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
