"""One run's MongoDB databases, each a test's own, and the collection of dead runs' databases.

PostgreSQL's rules (:mod:`unmocked.ownership`), on a server that has neither comments nor advisory
locks:

1. a database is ours only if its whole name is one :func:`~unmocked.ownership.run_database_name`
   makes, of kind ``mongo``: ``unmocked_<run>_mongo_<n>``, the run being the session's run id, so
   concurrent runs and xdist workers (each with a run id of its own) never share one;
2. a run proves it is alive by keeping a client open whose ``appName`` is :func:`lease_name`
   (pymongo keeps its monitoring connection open as long as the client is), and the server itself
   forgets the connections of a run that died, however it died;
3. a collection (at every run's first mongo fixture, and ``unmocked gc``) lists the live runs
   from ``$currentOp``, idle connections included, and drops our databases of every other run.
   When it cannot see every user's connections (no ``inprog`` privilege), or the server is a
   ``mongos`` (a run connected to another router is invisible from this one), or does not show
   the collecting client's own ``appName`` among them (names hidden: every run would look dead),
   it drops nothing;
4. a test's database is dropped after the test, whatever it did; the run drops any it missed as it
   ends.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from unmocked import ownership
from unmocked.errors import MongoError
from unmocked.mongo.sources import MongoSource, find_source
from unmocked.ownership import Dropped
from unmocked.resources import Closeable
from unmocked.urls import DatabaseURL, redact

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient, MongoClient

KIND = "mongo"
# appName of the client `unmocked gc` collects with: it is no run's lease.
COLLECTOR_NAME = f"{ownership.PREFIX}gc"
# How long a client waits for the server to answer, unless the URL's own
# ``serverSelectionTimeoutMS`` says: shorter than pymongo's 30 s, as a run waits on it.
DEFAULT_SELECTION_TIMEOUT_MS = 10_000


def selection_timeout_ms(url: str) -> int:
    """The URL's ``serverSelectionTimeoutMS`` (its keys are case-insensitive), else the default.

    Passed to every client as a keyword, which pymongo ranks above the URL: so it is read here.
    """
    for key, value in parse_qsl(urlsplit(url).query):
        if key.lower() == "serverselectiontimeoutms":
            with contextlib.suppress(ValueError):
                return max(1, int(float(value)))
    return DEFAULT_SELECTION_TIMEOUT_MS


def lease_name(run_id: str) -> str:
    """The ``appName`` of the client a live run keeps open on the server."""
    return f"{ownership.PREFIX}run_{run_id}"


def abandoned(names: Iterable[str], live_runs: Collection[str]) -> list[str]:
    """The names among ``names`` that are our MongoDB databases of a run not in ``live_runs``.

    Every other name is left alone: one without the whole pattern (``unmocked_notes``, a user's
    ``shop``), one of another kind, one of a live run.
    """
    found = []
    for name in names:
        made_by = ownership.run_in_name(name)
        if made_by is not None and made_by[1] == KIND and made_by[0] not in live_runs:
            found.append(name)
    return found


def live_runs(client: MongoClient[Any], own_name: str) -> set[str] | None:
    """The runs whose lease client is connected to the server; None when the server cannot tell
    all of them (see the module's third rule), or does not show ``own_name``, the ``appName`` of
    ``client`` itself: a server that hides names would make every live run look dead."""
    from pymongo.errors import OperationFailure

    if client.admin.command("hello").get("msg") == "isdbgrid":
        return None
    stage = {"$currentOp": {"allUsers": True, "idleConnections": True}}
    try:
        operations = list(client.admin.aggregate([stage]))
    except OperationFailure:
        return None
    prefix = lease_name("")
    runs = set()
    seen_self = False
    for operation in operations:
        app = operation.get("appName") or (
            operation.get("clientMetadata", {}).get("application", {}).get("name")
        )
        seen_self = seen_self or app == own_name
        if isinstance(app, str) and app.startswith(prefix):
            runs.add(app[len(prefix) :])
    return runs if seen_self else None


def collect(client: MongoClient[Any], own_name: str) -> list[Dropped]:
    """Drop our databases of runs that are no longer alive, on ``client`` (whose ``appName`` is
    ``own_name``); each returned with why."""
    live = live_runs(client, own_name)
    if live is None:
        return []
    dropped = []
    for name in abandoned(client.list_database_names(), live):
        client.drop_database(name)
        run = ownership.run_in_name(name)
        dropped.append(Dropped(name, f"MongoDB database of run {run and run[0]}, no longer alive"))
    return dropped


def collect_at(environ: Mapping[str, str], cache_dir: Path) -> tuple[list[Dropped], str]:
    """``unmocked gc``'s collection on the server of :func:`find_source`, and where that is."""
    with find_source(environ, cache_dir) as source:  # says first if pymongo is missing
        from pymongo import MongoClient

        client: MongoClient[Any] = MongoClient(
            source.url,
            appName=COLLECTOR_NAME,
            serverSelectionTimeoutMS=selection_timeout_ms(source.url),
        )
        with client:
            return _answered(source, lambda: collect(client, COLLECTOR_NAME)), source.where


def with_database(url: str, name: str) -> DatabaseURL:
    """``url`` naming database ``name``, still logging in where ``url`` did.

    A MongoDB URL's database is also where its user logs in unless ``authSource`` says otherwise,
    so a URL with a user and no ``authSource`` gets the one it meant: its own database, or
    ``admin``.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if "@" in parts.netloc and not any(key.lower() == "authsource" for key, _ in query):
        query.append(("authSource", parts.path.lstrip("/") or "admin"))
    return DatabaseURL(urlunsplit(parts._replace(path=f"/{name}", query=urlencode(query))))


def _answered(source: MongoSource, work: Any) -> Any:
    """``work()``, with pymongo's errors as a :class:`MongoError` naming the server."""
    from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

    try:
        return work()
    except ServerSelectionTimeoutError as error:
        # pymongo's message goes on with its whole topology; the first clause says why.
        why = redact(str(error)).split(" (configured timeouts")[0].split(", Timeout:")[0]
        raise MongoError(
            f"MongoDB at {source.where} did not answer within "
            f"{selection_timeout_ms(source.url) / 1000:g} s: "
            f"{why}. Check that it runs and that this machine reaches it."
        ) from None
    except PyMongoError as error:
        raise MongoError(
            f"MongoDB at {source.where} failed: {redact(str(error))}. Check that it runs and "
            "that its user may list, create and drop databases."
        ) from None


class MongoRun(Closeable):
    """This process's MongoDB: the server, the lease client, and the test databases it made."""

    def __init__(self, run_id: str, source: MongoSource) -> None:
        from pymongo import MongoClient

        self.run_id = run_id
        self.source = source
        self._names = itertools.count(1)
        self._made: set[str] = set()
        self.client: MongoClient[Any] = MongoClient(
            source.url,
            appName=lease_name(run_id),
            serverSelectionTimeoutMS=selection_timeout_ms(source.url),
        )
        try:
            # The ping opens the lease's connection before any database of ours exists.
            _answered(source, lambda: self.client.admin.command("ping"))
            self.collected = _answered(source, lambda: collect(self.client, lease_name(run_id)))
        except BaseException:
            self.close()
            raise

    @classmethod
    def started(cls, run_id: str, environ: Mapping[str, str], cache_dir: Path) -> MongoRun:
        """The run's MongoDB from the first source that serves (:func:`find_source`)."""
        source = find_source(environ, cache_dir)
        try:
            return cls(run_id, source)
        except BaseException:
            source.close()
            raise

    def url_of(self, name: str) -> DatabaseURL:
        return with_database(self.source.url, name)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """Yield the name of a database no other test and no other run uses; dropped after."""
        name = ownership.run_database_name(self.run_id, KIND, next(self._names))
        self._made.add(name)
        try:
            yield name
        finally:
            _answered(self.source, lambda: self.client.drop_database(name))
            self._made.discard(name)

    @contextlib.contextmanager
    def client_of(self, name: str) -> Iterator[MongoClient[Any]]:
        """A client of the test's own for database ``name``: what the test does to it (closing
        it, say) cannot end the run's lease."""
        from pymongo import MongoClient

        client: MongoClient[Any] = MongoClient(
            self.url_of(name), serverSelectionTimeoutMS=selection_timeout_ms(self.source.url)
        )
        with client:
            yield client

    def async_client_of(self, name: str) -> AsyncMongoClient[Any]:
        """As :meth:`client_of`, pymongo's ``AsyncMongoClient``, for the caller to close (``await
        client.close()``) in the loop of its first operation, to which pymongo binds it."""
        from pymongo import AsyncMongoClient

        return AsyncMongoClient(
            self.url_of(name), serverSelectionTimeoutMS=selection_timeout_ms(self.source.url)
        )

    def close(self) -> None:
        """Drop the databases a test missed, close the lease, stop a mongod we started."""
        try:
            for name in sorted(self._made):
                with contextlib.suppress(Exception):
                    self.client.drop_database(name)
            self._made.clear()
            self.client.close()
        finally:
            self.source.close()
