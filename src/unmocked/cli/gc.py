"""``unmocked gc [--templates]``: drop what runs that are no longer alive left on the server.

That is the databases of crashed runs, those kept for failed tests and old templates, as a run's
start collects them (:func:`unmocked.ownership.collect`), each printed with why, and what it
kept and why (a live run's, one a session is connected to, another role's, a recent template);
with ``--templates``, every cached template that no live run uses; the Docker containers of runs
that died (:func:`unmocked.servers.containers.collect_abandoned`); and, with
``UNMOCKED_MONGODB_URL`` set, the MongoDB databases of runs no longer alive
(:func:`unmocked.mongo.databases.collect`). Only databases unmocked created and recorded, and
containers carrying its labels, are ever touched.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from unmocked import ownership, templates
from unmocked.errors import MongoError
from unmocked.servers import binaries, known_state
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
    # First: a run with unmocked_provider = docker starting the server below would remove them
    # unreported.
    _collect_containers()
    with UnmockedSession(settings) as session:
        # Not session.admin: opening it collects as a run's start does, and what that dropped
        # would go unreported.
        with known_state.connect(session.server.url, session.server.major) as conn:
            kept: list[ownership.Kept] = []
            dropped = ownership.collect(conn, kept_for=0, kept=kept)
            if include_templates:
                dropped += _drop_every_template(conn)
                gone = {database.name for database in dropped}
                kept = [left for left in kept if left.name not in gone]
        where = session.server.describe()
    for gone_one in dropped:
        print(f"dropped {gone_one.name}: {gone_one.why}")
    for left in kept:
        print(f"kept {left.name}: {left.why}")
    print(f"unmocked gc: {len(dropped)} database(s) dropped, {len(kept)} kept, on {where}")
    _collect_files(settings)
    _collect_mongo(settings)
    return 0


def _collect_mongo(settings: Settings) -> None:
    """The MongoDB databases of dead runs on ``UNMOCKED_MONGODB_URL``'s server, when it is set.

    Not on a mongod or mongo container of a run's own: it stops with its run (the next run
    collects its slot; a dead run's container goes with the containers above).
    """
    from unmocked.mongo import sources

    if not os.environ.get(sources.URL_SETTING, "").strip():
        return
    from unmocked.mongo import databases

    try:
        dropped, where = databases.collect_at(os.environ, settings.cache_dir)
    except MongoError as error:
        print(f"unmocked gc: MongoDB not collected: {error}")
        return
    for gone in dropped:
        print(f"dropped {gone.name}: {gone.why}")
    print(f"unmocked gc: {len(dropped)} MongoDB database(s) dropped on {where}")


def _drop_every_template(conn: ownership.AdminConnection) -> list[ownership.Dropped]:
    """``--templates``: every template that no live run clones from right now."""
    return [
        ownership.Dropped(name, "template (--templates)") for name in templates.drop_templates(conn)
    ]


def _collect_containers() -> None:
    """The containers of runs that died, where an engine answers; a word only when one does."""
    from unmocked.servers import containers

    try:
        client = containers.engine()
    except containers.Unavailable:
        return  # no SDK or no engine: no container of ours can be there to collect
    removed = containers.collect_abandoned(client)
    for line in removed:
        print(f"removed {line}")
    print(f"unmocked gc: {len(removed)} container(s) of runs no longer alive removed")


def _collect_files(settings: Settings) -> None:
    """Idle clusters and unused copies of binaries on this machine; then what is still held."""
    removed = binaries.collect_unused(settings)
    for path in removed:
        print(f"removed {path}")
    print(f"unmocked gc: {len(removed)} idle cluster slot(s) or binaries copies removed; held now:")
    for line in binaries.held(settings):
        print(f"  {line}")
