"""``python -m unmocked.cli``: the ``unmocked`` command, for when its script is not on PATH."""

from __future__ import annotations

import sys

from unmocked.cli import main

sys.exit(main())
