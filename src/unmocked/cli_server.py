"""``unmocked up`` / ``down`` / ``status``: a server that outlives a test run."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add this module's commands to the ``unmocked`` parser (filled in by its issue)."""
