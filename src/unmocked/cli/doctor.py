"""``unmocked doctor``: which PostgreSQL servers unmocked can use here, and which one it picks."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from unmocked import ownership, servers, templates
from unmocked.errors import ServerError
from unmocked.servers import binaries, containers, known_state, wheels
from unmocked.session import UnmockedSession
from unmocked.settings import Settings
from unmocked.urls import redact


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``doctor`` to the ``unmocked`` parser."""
    commands.add_parser(
        "doctor", help="show which PostgreSQL servers unmocked can use"
    ).set_defaults(handler=lambda args, settings: doctor(settings))


def doctor(settings: Settings) -> int:
    """Print each provider and whether it can be used here."""
    url = settings.database_url
    print(f"url:      {redact(url) if url else 'UNMOCKED_DATABASE_URL is not set'}")
    _print_sources(settings)
    print(f"docker:   {containers.describe_engine(settings)}")
    print(f"cache:    {settings.cache_dir}")
    print("held on this machine:")
    for line in binaries.held(settings):
        print(f"  {line}")
    with UnmockedSession(settings) as session:
        print(f"auto picks: {session.server.describe()}")
        _print_settings_left(session)
        _print_templates_held(session)
    return 0


def _print_sources(settings: Settings) -> None:
    """Every PostgreSQL unmocked could start here (each wheel it knows, each of the machine's
    bindirs), its version, and the one the settings pick; or the paragraph saying none fits."""
    wanted = f"unmocked_pg_version = {settings.pg_version}" if settings.pg_version else "any major"
    print(f"binaries ({wanted}, unmocked_provider = {settings.provider}):")
    choice: servers.BinariesChoice | None = None
    refused: str | None = None
    on_url = settings.provider == "url" or (
        settings.provider == "auto" and bool(settings.database_url)
    )
    if on_url:
        refused = "the run uses the server at UNMOCKED_DATABASE_URL"
    elif settings.provider == "docker":
        refused = "the run uses a Docker container (see docker: above)"
    else:
        try:
            found = servers.choose_binaries(settings)  # without docker=: nothing is started
            choice = found if isinstance(found, servers.BinariesChoice) else None
        except ServerError as error:
            refused = str(error)
    installed = wheels.installed()
    rows: list[tuple[str, str, Path | str]] = [
        ("embedded", f"{each.wheel.distribution} {each.version}", each.bindir) for each in installed
    ]
    rows += [
        ("embedded", wheel.distribution, f"not installed (pip install 'unmocked[{wheel.extra}]')")
        for wheel in wheels.KNOWN
        if wheel.extra
        and wheel not in {each.wheel for each in installed}
        and wheel is wheels.extra_for(wheel.majors[0])
    ]
    rows += [
        ("local", binaries._version_of(bindir)[0], bindir)
        for bindir in binaries.local_bindirs(None)
    ]
    if not any(source == "local" for source, _, _ in rows):
        rows.append(("local", "none", "no initdb/postgres found (apt-get install postgresql)"))
    # The Docker provider adds its rows (postgres:<major> images) here.
    for source, version, where in rows:
        picked = "  <- picked" if choice is not None and where == choice.bindir else ""
        print(f"  {source:<9} {version:<26} {where}{picked}")
    if choice is not None and choice.reason:
        print(f"  ({choice.reason})")
    if refused is not None:
        print(f"  none picked: {refused}")


def _print_settings_left(session: UnmockedSession) -> None:
    """Settings tests left on the picked server: put back (a server unmocked runs), or those new
    sessions there inherit that would break them (a server given by URL: altered by nobody but
    its admins)."""
    if session.restored:
        print(f"settings: put back what tests had left: {'; '.join(session.restored)}")
    with known_state.connect(session.server.url, session.server.major) as conn:
        inherited = known_state.departures(conn)
    if inherited:
        print(
            f"settings: off: new sessions inherit {'; '.join(inherited)}. unmocked's own "
            "sessions ignore them, the tests' connections do not: undo them with ALTER ... RESET"
        )
    elif not session.restored:
        print("settings: none left by tests")


def _print_templates_held(session: UnmockedSession) -> None:
    """The templates of ours on the picked server: how many, their size, the oldest last use.

    On a connection of its own: the session's admin connection collects as it opens, and a doctor
    only looks.
    """
    with known_state.connect(session.server.url, session.server.major) as conn:
        held = templates.held_templates(conn)
    line = f"templates: {held.count} on that server, {held.bytes / 2**20:.0f} MB"
    if held.least_recent_use is not None:
        unused = ownership.age_in_words(time.time() - held.least_recent_use)
        line += f", the least recently used {unused} ago"
    print(
        f"{line} (runs drop those unused for "
        f"{ownership.TEMPLATE_UNUSED_FOR_SECONDS // (24 * 3600)} days, or past the "
        f"{ownership.TEMPLATES_KEPT_AT_MOST} most recently used)"
    )
    if held.unrecorded:
        print(
            f"  {held.unrecorded} of them from unmocked 0.1.0, which records no use: "
            "`unmocked gc --templates` drops them"
        )
