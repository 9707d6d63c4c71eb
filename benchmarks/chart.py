"""The per-test table as a picture: each mode's cost over bare pytest, unmocked's beside its peers.

A reader of ``README.md`` should see at a glance how far apart the modes are; they span three
orders of magnitude (a rollback against a database per test), so the axis is logarithmic. One
horizontal bar a mode, coloured by kind: unmocked's fixtures, the peers (pytest-postgresql,
``TRUNCATE``), and the floors that do the same work with no isolation at all. matplotlib is
imported only here, when ``--chart`` asks for a picture: the benchmark itself does not need it
(``pip install -e '.[dev,bench]'``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from isolation import Mode, ModeResult

PEERS = ("pytest-postgresql", "truncate")
_COLOURS = {"unmocked": "#2b6cb0", "peer": "#c05621", "floor": "#a0aec0"}
# A log axis cannot show zero or less: a cost within noise of bare's is drawn at this height.
_SMALLEST_MS = 0.01


def why_unavailable() -> str | None:
    """Why no chart can be drawn here, or None: checked before a run of minutes, not after."""
    if importlib.util.find_spec("matplotlib") is None:
        return "--chart needs matplotlib: pip install -e '.[dev,bench]'"
    return None


def kind_of(mode: Mode) -> str:
    """``unmocked`` for its fixtures, ``peer`` for the other ways of isolating, else ``floor``."""
    if mode.name in PEERS:
        return "peer"
    return "unmocked" if "unmocked.plugin" in mode.plugins else "floor"


def draw(results: list[ModeResult], modes: list[Mode], path: Path, subtitle: str) -> None:
    """Write the chart of ``results`` (bare left out: it is the zero) to ``path`` as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file is all that is wanted
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    kinds = {mode.name: kind_of(mode) for mode in modes}
    shown = [r for r in results if r.mode != "bare" and r.over_bare_ms is not None]
    figure, axes = plt.subplots(figsize=(9, 0.36 * len(shown) + 1.6))
    heights = [max(r.over_bare_ms or 0.0, _SMALLEST_MS) for r in shown]
    positions = range(len(shown))
    axes.barh(positions, heights, color=[_COLOURS[kinds[r.mode]] for r in shown])
    for position, result, height in zip(positions, shown, heights, strict=True):
        axes.text(height * 1.08, position, f"{result.over_bare_ms:.2f}", va="center", fontsize=8)
    axes.set_yticks(list(positions), [r.mode for r in shown], fontsize=9)
    axes.invert_yaxis()  # the table's order, top to bottom
    axes.set_xscale("log")
    axes.set_xlim(right=max(heights) * 4)
    axes.set_xlabel("per-test cost over bare pytest, ms (log scale)")
    axes.set_title(f"What one more test costs\n{subtitle}", fontsize=10)
    figure.legend(
        handles=[
            Patch(color=_COLOURS["unmocked"], label="unmocked"),
            Patch(color=_COLOURS["peer"], label="peers"),
            Patch(color=_COLOURS["floor"], label="floors: the same work, no isolation"),
        ],
        loc="lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    axes.grid(axis="x", which="both", alpha=0.3)
    figure.tight_layout(rect=(0, 0.05, 1, 1))  # room for the legend below
    figure.savefig(path, dpi=110)
    plt.close(figure)
