"""``unmocked gc [--templates]``: drop what runs that are no longer alive left on the server.

That is the databases of crashed runs and those kept for failed tests (and, with ``--templates``,
every cached template). Only databases unmocked created and recorded are ever touched.
"""

from __future__ import annotations

import argparse
from typing import Any

from unmocked import ownership, templates
from unmocked.session import UnmockedSession
from unmocked.settings import Settings


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``gc`` to the ``unmocked`` parser."""
    parser = commands.add_parser("gc", help="drop databases left behind by crashed runs")
    parser.add_argument("--templates", action="store_true", help="also drop every cached template")
    parser.set_defaults(
        handler=lambda args, settings: collect_garbage(settings, include_templates=args.templates)
    )


def collect_garbage(settings: Settings, include_templates: bool) -> int:
    """Drop what dead runs left behind; with ``include_templates``, every template too."""
    with UnmockedSession(settings) as session:
        dropped = ownership.collect_abandoned(session.admin, kept_for=0)
        if include_templates:
            dropped += templates.drop_templates(session.admin)
        where = session.server.describe()
    for name in dropped:
        print(f"dropped {name}")
    print(f"unmocked gc: {len(dropped)} database(s) dropped on {where}")
    return 0
