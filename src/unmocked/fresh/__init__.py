"""Fresh databases for ``pg_url``: a database of the test's own, in the template's state, fast.

A database is cloned from the template once and then put back in place between tests, under a new
name each time, while the next test runs on another one:

1. :mod:`~unmocked.fresh.pool`: :class:`FreshPool`, the databases one process holds, each at a
   named :class:`Stage` of its life (in use, resetting, ready; kept for a failed test; dropped);
2. :mod:`~unmocked.fresh.reset`: the machinery installed in the copy of the template they are cloned
   from (``reset.sql``), and the non-blocking driver that runs the reset.

What the code under test left connected as its test ended is said by :mod:`unmocked.checks.leaks`.

The whole life of one database is drawn in docs/design.md.
"""

from __future__ import annotations

from unmocked.fresh.pool import FreshDatabase, FreshPool, Stage

__all__ = ["FreshDatabase", "FreshPool", "Stage"]
