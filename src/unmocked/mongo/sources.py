"""Where a run's MongoDB server comes from, in order, and the one paragraph when none is found.

1. ``UNMOCKED_MONGODB_URL``: a server someone runs (a CI service container, a shared server);
   unmocked creates and drops only its own databases there;
2. a ``mongod`` on PATH, which :mod:`unmocked.servers.mongod` starts for the run and stops;
3. Docker's ``mongo:<version>`` image comes from :mod:`unmocked.servers.docker`, the PostgreSQL
   Docker provider written apart: until it can start a ``mongo`` container, the paragraph below
   names the ``docker run`` that serves through (1).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Mapping
from pathlib import Path

from unmocked.errors import ConfigurationError, MongoError
from unmocked.resources import Closeable
from unmocked.servers.mongod import MongodServer, mongod_on_path, start_mongod
from unmocked.urls import DatabaseURL, redact

URL_SETTING = "UNMOCKED_MONGODB_URL"
PYMONGO_AT_LEAST = (4, 10)  # the first with AsyncMongoClient, which mongo_db_async hands out
_INSTALL_PYMONGO = "pip install 'unmocked[mongo]' (or pip install 'pymongo>=4.10')"
NO_SOURCE = (
    f"No MongoDB server for the mongo fixtures (mongo_db, mongo_db_async, mongo_url): "
    f"{URL_SETTING} is not set and no mongod is on PATH. unmocked gets one in any of three ways: "
    f"(1) set {URL_SETTING} to a server you run, mongodb://USER:PASSWORD@HOST:PORT/ (a CI service "
    "container, a shared server), where unmocked creates and drops only its own databases; "
    "(2) install MongoDB's server so that mongod is on PATH (MongoDB's own packages or archive: "
    "Debian and PyPI carry none), and unmocked starts it for the run, its data in RAM, and stops "
    "it after; (3) with Docker, docker run -d -p 27017:27017 mongo:8, then "
    f"{URL_SETTING}=mongodb://127.0.0.1:27017/. Each needs pymongo 4.10 or later: "
    f"{_INSTALL_PYMONGO}."
)


class MongoSource(Closeable):
    """A MongoDB server for the run: its admin URL, where it came from, and the mongod to stop
    on :meth:`close` if unmocked started it."""

    def __init__(self, url: str, where: str, started: MongodServer | None = None) -> None:
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
    # Docker goes here, once unmocked.servers.docker can start a mongo:<version> container.
    raise MongoError(NO_SOURCE)


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
