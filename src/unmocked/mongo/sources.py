"""Where a run's MongoDB server comes from, in order, and the one paragraph when none is found.

1. ``UNMOCKED_MONGODB_URL``: a server someone runs (a CI service container, a shared server);
   unmocked creates and drops only its own databases there;
2. a ``mongod`` on PATH, which :mod:`unmocked.servers.mongod` starts for the run and stops;
3. a container from Docker's ``mongo:<version>`` (``UNMOCKED_MONGODB_VERSION``, default 8), when a
   Docker engine answers (:mod:`unmocked.servers.mongo_container`): removed when the run ends,
   and by the next start or ``unmocked gc`` when its run died.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path

from unmocked.errors import ConfigurationError, MongoError, ServerError
from unmocked.resources import Closeable
from unmocked.servers.mongod import mongod_on_path, start_mongod
from unmocked.urls import DatabaseURL, redact

URL_SETTING = "UNMOCKED_MONGODB_URL"
VERSION_SETTING = "UNMOCKED_MONGODB_VERSION"
DEFAULT_VERSION = "8"
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # Docker's rule for an image's tag
PYMONGO_AT_LEAST = (4, 10)  # the first with AsyncMongoClient, which mongo_db_async hands out
_INSTALL_PYMONGO = "pip install 'unmocked[mongo]' (or pip install 'pymongo>=4.10')"
_URL_WAY = (
    f"set {URL_SETTING} to a server you run, mongodb://USER:PASSWORD@HOST:PORT/ (a CI service "
    "container, a shared server), where unmocked creates and drops only its own databases"
)
_MONGOD_WAY = (
    "install MongoDB's server so that mongod is on PATH (MongoDB's own packages or archive: "
    "Debian and PyPI carry none), and unmocked starts it for the run, its data in RAM, and stops "
    "it after"
)
NO_SOURCE = (
    f"No MongoDB server for the mongo fixtures (mongo_db, mongo_db_async, mongo_url): "
    f"{URL_SETTING} is not set, no mongod is on PATH, and Docker cannot serve ({{docker}}). "
    f"unmocked gets one in any of three ways: (1) {_URL_WAY}; (2) {_MONGOD_WAY}; (3) run a Docker "
    "engine (DOCKER_HOST, else the default socket) and install the Docker SDK for Python "
    "(pip install 'unmocked[docker]'): when the engine answers, unmocked starts a container from "
    f"mongo:<{VERSION_SETTING}, default 8> for the run and removes it after. Each needs pymongo "
    f"4.10 or later: {_INSTALL_PYMONGO}."
)
NO_IMAGE = (
    f"No MongoDB server for the mongo fixtures (mongo_db, mongo_db_async, mongo_url): "
    f"{URL_SETTING} is not set, no mongod is on PATH, and {{docker}}. Or get one another way: "
    f"{_URL_WAY}; or {_MONGOD_WAY}."
)


class MongoSource(Closeable):
    """A MongoDB server for the run: its admin URL, where it came from, and the mongod to stop
    or the container to remove on :meth:`close` if unmocked started it."""

    def __init__(self, url: str, where: str, started: Closeable | None = None) -> None:
        self.url = DatabaseURL(url)
        self.where = where
        """In words, without a password: for errors and ``unmocked gc``."""
        self._started = started

    def close(self) -> None:
        if self._started is not None:
            self._started.close()


def find_source(environ: Mapping[str, str], cache_dir: Path) -> MongoSource:
    """The first source of the module's list that serves; :class:`MongoError` when none does,
    or when pymongo is missing, after the source is known (so that the paragraph that comes first
    is the one about the server)."""
    text = environ.get(URL_SETTING, "").strip()
    if text:
        url = mongodb_url(text)
        require_pymongo()
        return MongoSource(url, f"{URL_SETTING} ({redact(url)})")
    program = mongod_on_path()
    if program is not None:
        require_pymongo()
        server = start_mongod(program, cache_dir)
        return MongoSource(server.url, server.describe(), server)
    return _from_docker(environ)


def _from_docker(environ: Mapping[str, str]) -> MongoSource:
    """A container from ``mongo:<UNMOCKED_MONGODB_VERSION>``; :class:`MongoError` saying the
    three ways when no engine answers, or the image and the others when the engine lacks it."""
    from unmocked.servers import containers, mongo_container

    image_name = image_for(environ.get(VERSION_SETTING, ""))
    try:
        client = containers.engine()
    except containers.Unavailable as why:
        raise MongoError(NO_SOURCE.format(docker=why)) from None
    require_pymongo()

    def instead(images: str) -> str:
        return f"set {VERSION_SETTING} to the tag of a mongo image the engine has ({images})"

    try:
        url, where, running = mongo_container.start(client, image_name, instead)
    except containers.Unavailable as why:
        raise MongoError(NO_IMAGE.format(docker=str(why).rstrip("."))) from None
    except ServerError as error:  # the engine would not start the container
        raise MongoError(str(error)) from None
    return MongoSource(url, where, running)


def image_for(version: str) -> str:
    """``mongo:<version>`` (default ``mongo:8``); :class:`ConfigurationError` for a version that
    is not a Docker tag."""
    tag = version.strip() or DEFAULT_VERSION
    if not _TAG.fullmatch(tag):
        raise ConfigurationError(
            f"{VERSION_SETTING} is {version!r}, which is not a tag of the mongo image: write a "
            "version such as 8, 7.0 or 8.0.4."
        )
    return f"mongo:{tag}"


def mongodb_url(text: str) -> str:
    """``text`` if it is a ``mongodb://`` or ``mongodb+srv://`` URL; else a
    :class:`ConfigurationError` that names the setting and hides the password."""
    if not text.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigurationError(
            f"{URL_SETTING} is {redact(text)!r}, which is not a MongoDB URL. Write it as "
            "mongodb://USER:PASSWORD@HOST:PORT/ (or mongodb+srv://...), percent-encoding special "
            "characters."
        )
    return text


def require_pymongo() -> None:
    """:class:`MongoError` unless pymongo 4.10 or later can be imported (found, not imported)."""
    try:
        found = importlib.util.find_spec("pymongo") is not None
    except ImportError:
        found = False
    if not found:
        raise MongoError(
            f"The mongo fixtures need pymongo 4.10 or later, which is not installed: "
            f"{_INSTALL_PYMONGO}."
        )
    try:
        version = importlib.metadata.version("pymongo")
    except importlib.metadata.PackageNotFoundError:
        return  # importable without metadata (a source checkout): it may be any version
    if tuple(int(part) for part in version.split(".")[:2] if part.isdigit()) < PYMONGO_AT_LEAST:
        raise MongoError(
            f"The mongo fixtures need pymongo 4.10 or later; pymongo {version} is installed: "
            f"{_INSTALL_PYMONGO}."
        )
