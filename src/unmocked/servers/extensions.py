"""Which extensions each PostgreSQL installation here offers, and what that means for a run.

An installation offers an extension when the extension's control file is in its
``share/extension`` folder: a listing of that folder says so, without starting a server. With it:

1. :func:`better_than_embedded` (``auto``): when the embedded wheel lacks an extension the run
   needs and the machine's binaries have every one, the run starts on those, and the reason is
   one line of the run's header (:attr:`Server.reason <unmocked.servers.Server.reason>`);
2. :func:`why_unavailable`: when ``CREATE EXTENSION`` fails anyway (no installation has them all,
   the provider is fixed, a server given by URL lacks it), which server lacks it, what each
   installation here has, and how to get it, for the migration error to say: another provider or
   setting when an installation here has them all; else where each one is and one way per source
   to have them together (the machine's binaries: a package; Docker: an image; pip: none, the
   wheel has what it was built with; a server by URL).
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from unmocked.errors import ServerError
from unmocked.settings import Settings
from unmocked.urls import redact

# The Debian/Ubuntu package of extensions that are not part of PostgreSQL itself; contrib's come
# with the server package there.
_PACKAGES = {
    "vector": "postgresql-{major}-pgvector",
    "postgis": "postgresql-{major}-postgis-3",
    "postgis_raster": "postgresql-{major}-postgis-3",
    "postgis_topology": "postgresql-{major}-postgis-3",
    "pgrouting": "postgresql-{major}-pgrouting",
    "pg_cron": "postgresql-{major}-cron",
    "pg_partman": "postgresql-{major}-partman",
    "hypopg": "postgresql-{major}-hypopg",
    "pg_repack": "postgresql-{major}-repack",
    "pgaudit": "postgresql-{major}-pgaudit",
    "plpython3u": "postgresql-plpython3-{major}",
}
# Packaged by PGDG (apt.postgresql.org) but not by every distribution: Debian 12 has no pgvector.
_FROM_PGDG = frozenset({"vector"})
# Docker images with one of these extensions, and contrib's (they build on postgres:N).
_IMAGES = {
    "postgis": "postgis/postgis:{major}-3.x",
    "postgis_raster": "postgis/postgis:{major}-3.x",
    "postgis_topology": "postgis/postgis:{major}-3.x",
    "vector": "pgvector/pgvector:pg{major}",
}
# Contrib extensions that need a library at build time (libuuid, OpenSSL, libxml2), so a build may
# leave them out, as the embedded wheel's does; Debian's server package has them.
_WITH_THE_SERVER = frozenset({"uuid-ossp", "pgcrypto", "sslinfo", "xml2"})


@dataclass(frozen=True)
class Installation:
    """One set of PostgreSQL binaries here, and the extensions it offers."""

    provider: str
    """``embedded`` or ``local``."""
    bindir: Path
    major: int
    offered: frozenset[str] | None
    """The extensions it has control files for; None when its extension folder was not found."""

    def describe(self, where: bool = True) -> str:
        """``the machine's PostgreSQL 15 (/usr/lib/postgresql/15/bin)``."""
        whose = "the embedded" if self.provider == "embedded" else "the machine's"
        return f"{whose} PostgreSQL {self.major}" + (f" ({self.bindir})" if where else "")

    def lacks(self, needs: Sequence[str]) -> list[str]:
        """Those of ``needs`` it does not offer, in their order (all of them when unknown)."""
        return [name for name in needs if self.offered is None or name not in self.offered]


def installation(bindir: Path, provider: str) -> Installation:
    """The installation whose programs are in ``bindir``; ServerError if ``postgres`` won't say
    its version."""
    from unmocked.servers import binaries

    _, major = binaries._version_of(bindir)
    return Installation(provider, bindir, major, offered_by(bindir))


@functools.cache
def offered_by(bindir: Path) -> frozenset[str] | None:
    """The extensions the installation of ``bindir`` has control files for; None when its
    extension folder is not found. Read once per process: a listing of one folder."""
    folder = extension_folder(bindir)
    if folder is None:
        return None
    try:
        names = [path.name for path in folder.iterdir()]
    except OSError:
        return None
    return frozenset(name[: -len(".control")] for name in names if name.endswith(".control"))


def extension_folder(bindir: Path) -> Path | None:
    """Where the installation of ``bindir`` keeps its control files.

    ``share/extension`` beside ``bin`` (the embedded wheel, source builds, PGDG's /usr/pgsql-N),
    Debian's ``/usr/share/postgresql/<major>/extension``; else where ``pg_config --sharedir`` of
    ``bindir`` says (Homebrew), last, because it runs a program. A folder counts when it holds
    ``plpgsql.control``, which every installation has.
    """
    prefix = bindir.parent
    candidates = [prefix / "share" / "extension", prefix / "share" / "postgresql" / "extension"]
    if prefix.parent == Path("/usr/lib/postgresql"):
        candidates.append(Path("/usr/share/postgresql") / prefix.name / "extension")
    for folder in candidates:
        if (folder / "plpgsql.control").is_file():
            return folder
    try:
        answer = subprocess.run(
            [str(bindir / "pg_config"), "--sharedir"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    folder = Path(answer.stdout.strip()) / "extension"
    found = answer.returncode == 0 and (folder / "plpgsql.control").is_file()
    return folder if found else None


def better_than_embedded(
    needs: Sequence[str], embedded: Path, pg_version: int | None
) -> tuple[Path, str] | None:
    """The machine's binaries to start instead of the embedded wheel's (in ``embedded``), and
    the header's line saying why: when the wheel lacks one of ``needs`` and they (of
    ``pg_version``, when set) have every one. None when the wheel has them, or none has all."""
    if not needs:
        return None
    wheel = installation(embedded, "embedded")
    lacking = wheel.lacks(needs)
    if not lacking:
        return None
    from unmocked.servers import binaries

    for bindir in binaries.local_bindirs(pg_version):
        try:
            machine = installation(bindir, "local")
        except ServerError:
            continue
        if not machine.lacks(needs):
            verb = "is" if len(lacking) == 1 else "are"
            return bindir, (
                f"{_and(lacking)} {verb} not in {wheel.describe(where=False)}: using "
                f"{machine.describe()}"
            )
    return None


def installations() -> list[Installation]:
    """The wheels' binaries (see :mod:`.wheels`), then the machine's (newest first): what auto
    would try."""
    from unmocked.servers import binaries, wheels

    candidates = [(each.bindir, "embedded") for each in wheels.installed()]
    candidates += [(bindir, "local") for bindir in binaries.local_bindirs(None)]
    found: list[Installation] = []
    for bindir, provider in candidates:
        try:
            found.append(installation(bindir, provider))
        except ServerError:
            continue
    return found


def why_unavailable(
    name: str,
    needs: Sequence[str],
    settings: Settings,
    server_version: str | None,
    found: Sequence[Installation] | None = None,
) -> str:
    """Sentences for people, to follow PostgreSQL's ``extension "name" is not available``:
    which server lacks ``name``, what each installation here (``found``; by default
    :func:`installations`) has of it and of the rest of ``needs``, and how to get it."""
    needs = list(dict.fromkeys([name, *needs]))
    found = installations() if found is None else found
    checked = [_what_it_has(inst, needs, settings.pg_version) for inst in found]
    if not any(inst.provider == "embedded" for inst in found):
        checked.insert(0, "the embedded wheel: not installed")
    if not any(inst.provider == "local" for inst in found):
        checked.append(
            "the machine's PostgreSQL: not found (no initdb and postgres on PATH, in "
            "`pg_config --bindir` or under /usr/lib/postgresql/*/bin)"
        )
    version = f"PostgreSQL {server_version}" if server_version else "PostgreSQL"
    if _on_url(settings):
        server = f"The server at UNMOCKED_DATABASE_URL ({redact(str(settings.database_url))}, "
        server += f"{version})"
    else:
        server = f"The server this run uses ({version})"
    major = int(server_version.split(".")[0]) if server_version else None
    how = _how_to_get(name, needs, found, settings, major)
    return f"{server} does not have {name} installed. Checked: {'; '.join(checked)}. {how}"


def _what_it_has(inst: Installation, needs: Sequence[str], wanted: int | None) -> str:
    """``the machine's PostgreSQL 15 (...): has uuid-ossp, not vector``."""
    if inst.offered is None:
        return f"{inst.describe()}: its extension folder was not found"
    missing = inst.lacks(needs)
    present = [name for name in needs if name not in missing]
    if not present:
        has = {1: f"no {missing[0]}", 2: f"neither {' nor '.join(missing)}"}.get(
            len(missing), f"none of {', '.join(missing)}"
        )
    else:
        has = f"has {_and(present)}" + (f", but not {_or(missing)}" if missing else "")
    if wanted not in (None, inst.major):
        has += f" (not unmocked_pg_version = {wanted})"
    return f"{inst.describe()}: {has}"


def _how_to_get(
    name: str,
    needs: Sequence[str],
    found: Sequence[Installation],
    settings: Settings,
    server_major: int | None,
) -> str:
    """What to do: another provider, a setting, or what to install where."""
    wanted = settings.pg_version
    fits = [inst for inst in found if not inst.lacks(needs) and wanted in (None, inst.major)]
    them = _and(needs) if len(needs) <= 2 else "them all"
    if _on_url(settings):
        if fits:
            unset = "unset UNMOCKED_DATABASE_URL" + (
                " and set unmocked_provider = auto" if settings.provider == "url" else ""
            )
            other = f"{unset} and unmocked starts {fits[0].describe()}, which has {them}"
        else:
            wheel = next((inst for inst in found if inst.provider == "embedded"), None)
            docker = _docker_way(needs, server_major, wheel)
            other = f"point UNMOCKED_DATABASE_URL at a server that has it, or unset it and {docker}"
        return f"Install {name} on that server ({_package(name, server_major)}), or {other}."
    if fits:
        best = fits[0]
        if settings.provider != "auto" and best.provider != settings.provider:
            return (
                f"unmocked_provider = {settings.provider} keeps the run off "
                f"{best.describe(where=False)}, which has {them}: set unmocked_provider = auto "
                f"(or {best.provider}) to use it."
            )
        if settings.provider == "local":
            return (
                f"Set unmocked_pg_version = {best.major} and unmocked starts "
                f"{best.describe(where=False)}, which has {them}."
            )
        # auto, yet another server: the migrations create it where unmocked does not read before
        # it starts the server (Django's migrations, a module a callable imports), or the server
        # `unmocked up` started is in use.
        return (
            f"unmocked saw no CREATE EXTENSION {name} in the migrations' files when it chose the "
            f"server: name {name} in unmocked_extensions and it starts "
            f"{best.describe(where=False)}, which has {them} (a server `unmocked up` started "
            "stays in use until unmocked down)."
        )
    return _where_to_get(name, needs, found, settings, server_major)


def _where_to_get(
    name: str,
    needs: Sequence[str],
    found: Sequence[Installation],
    settings: Settings,
    server_major: int | None,
) -> str:
    """No installation here has ``needs`` together (of ``unmocked_pg_version``, when set): where
    each one is, then one way per source to have them in one server: a package for the machine's
    binaries, a Docker image, a server by URL. pip has none: the embedded wheel has the
    extensions it was built with."""
    wanted = settings.pg_version
    them = _and(needs) if len(needs) <= 2 else "them all"
    here = f"of PostgreSQL {wanted} here" if wanted else "here"
    if len(needs) == 1:
        holders = _holders(name, found)
        summary = f"No installation {here} has {name}" + (
            f" (only {_and(holders)})" if holders else ""
        )
    else:
        each = [
            f"{need}: {_and(holders) if holders else 'none'}"
            for need in needs
            if any(inst.lacks([need]) for inst in found)
            for holders in [_holders(need, found)]
        ]
        summary = f"No one installation {here} has {them}" + (
            f" ({'; '.join(each)})" if each else ""
        )
    wheel = next((inst for inst in found if inst.provider == "embedded"), None)
    beyond_pip = wheel.lacks(needs) if wheel else []
    if beyond_pip:
        summary += f", and no pip install adds {_and(beyond_pip)} to the embedded wheel"
    major = wanted or server_major or max((inst.major for inst in found), default=None)
    ways = [
        _local_way(name, needs, found, settings),
        _docker_way(needs, major, wheel),
        f"set UNMOCKED_DATABASE_URL to a server that has {them}",
    ]
    get = f"To get {them} in one server" if len(needs) > 1 else f"To get {name}"
    return f"{summary}. {get}: {'; '.join(ways[:-1])}; or {ways[-1]}."


def _holders(name: str, found: Sequence[Installation]) -> list[str]:
    """The installations of ``found`` that have ``name``, for people."""
    return [inst.describe(where=False) for inst in found if not inst.lacks([name])]


def _local_way(
    name: str, needs: Sequence[str], found: Sequence[Installation], settings: Settings
) -> str:
    """``add vector to the machine's PostgreSQL 15 (apt-get install ...)``, and what then starts
    it: nothing more to set under ``local``, which the run already uses."""
    wanted = settings.pg_version
    machine = [inst for inst in found if inst.provider == "local" and wanted in (None, inst.major)]
    if machine:
        best = min(machine, key=lambda inst: len(inst.lacks(needs)))
        missing = best.lacks(needs)
        commands = "; ".join(_package(each, best.major) for each in missing)
        way = f"add {_and(missing)} to {best.describe(where=False)} ({commands})"
    else:
        major = wanted or max((inst.major for inst in found), default=None)
        server = f"PostgreSQL {major}'s server" if major else "PostgreSQL's server"
        # The server's package has contrib's: those of no known package an installation here
        # has (when none is here, those of no known package are taken for contrib's).
        known = {each for inst in found for each in inst.offered or ()}
        packaged = [
            need
            for need in needs
            if need in _PACKAGES or (known and need not in known | _WITH_THE_SERVER)
        ]
        commands = "; ".join(_package(each, major) for each in packaged)
        version = str(major) if major is not None else "<major>"
        way = (
            f"install {server} with {_and(packaged)} ({commands})"
            if packaged
            else f"install {server} (apt-get install postgresql-{version})"
        )
    if settings.provider == "auto":
        return f"{way}, and unmocked_provider = auto starts it"
    if settings.provider == "local":
        return way
    return f"{way}, then set unmocked_provider = local"


def _docker_way(needs: Sequence[str], major: int | None, wheel: Installation | None) -> str:
    """``use a Docker image with postgis, e.g. postgis/postgis:18-3.x, ...``: the example only
    when one image has all of ``needs``: one extension of :data:`_IMAGES` at most, the rest
    contrib's (those the embedded wheel has, as every ``postgres:N`` image does)."""
    version = str(major) if major is not None else "<major>"
    contrib = (wheel.offered or frozenset()) - _IMAGES.keys() if wheel else frozenset()
    images = {_IMAGES[need] for need in needs if need in _IMAGES}
    plain = all(need in _IMAGES or need in _WITH_THE_SERVER or need in contrib for need in needs)
    example = ""
    if plain and len(images) <= 1:
        image = next(iter(images), "postgres:{major}")
        example = f", e.g. {image.format(major=version)}"
    what = "it" if len(needs) == 1 else _and(needs) if len(needs) == 2 else "them all"
    return f"use a Docker image with {what}{example}, with unmocked_provider = docker"


def _package(name: str, major: int | None) -> str:
    """How to install ``name`` on Debian or Ubuntu, as an example command."""
    version = str(major) if major is not None else "<major>"
    if name in _WITH_THE_SERVER:
        return f"part of the server package: apt-get install postgresql-{version}"
    if name in _PACKAGES:
        command = f"apt-get install {_PACKAGES[name].format(major=version)}"
        return command + (", from PGDG's apt repository" if name in _FROM_PGDG else "")
    return f"check the name; its package: apt-cache search postgresql-{version} {name}"


def _on_url(settings: Settings) -> bool:
    return settings.provider in ("auto", "url") and bool(settings.database_url)


def _or(names: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _and(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
