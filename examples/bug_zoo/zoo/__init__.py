"""The bug zoo: five bugs a mocked suite passes, each written beside its fix.

Each module holds one bug class: the buggy and the fixed version of the code side by side, and
``variant()`` choosing between them. ``BUG_ZOO=buggy`` in the environment picks the buggy ones;
without it (or with ``BUG_ZOO=fixed``) the fixed ones run.
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

VERSION = os.environ.get("BUG_ZOO") or "fixed"
if VERSION not in ("fixed", "buggy"):
    raise RuntimeError(f"BUG_ZOO={VERSION!r}: write BUG_ZOO=buggy, or BUG_ZOO=fixed (the default).")


def variant(*, fixed: T, buggy: T) -> T:
    """The version ``BUG_ZOO`` names."""
    return buggy if VERSION == "buggy" else fixed
