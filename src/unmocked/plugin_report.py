"""What the run prints: one header line, one summary line, phases with -v."""

from __future__ import annotations
