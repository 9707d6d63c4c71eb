"""Where a run's database time goes, phase by phase, for ``pytest -v`` and the benchmarks.

Phases are named for what happened (``initdb``, ``start``, ``migrate``, ``clone``, ``release``...);
each keeps how often it ran and the seconds it took in total. xdist workers' phases are merged into
the controller's with the rest of the run's tally (:mod:`unmocked.report`). :func:`measured` is the
one stopwatch: phases and the tally's database time both use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@contextmanager
def measured(add: Callable[[float], None]) -> Iterator[None]:
    """Hand ``add`` the seconds the block took, also when it raises."""
    started = time.perf_counter()
    try:
        yield
    finally:
        add(time.perf_counter() - started)


@dataclass
class Phases:
    """Seconds and counts per phase name, in the order the phases first happened."""

    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Record the time the block takes under ``name``, also when it raises."""
        with measured(lambda seconds: self.record(name, seconds)):
            yield

    def merge(self, other: Phases) -> None:
        for name, seconds in other.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.counts[name] = self.counts.get(name, 0) + other.counts.get(name, 0)

    def describe(self) -> str:
        """``initdb 0.61 s, start 0.12 s, clone 12x 0.40 s``: one line for ``-v``."""
        parts = []
        for name, seconds in self.seconds.items():
            count = self.counts[name]
            times = f"{count}x " if count > 1 else ""
            parts.append(f"{name} {times}{seconds:.2f} s")
        return ", ".join(parts)
