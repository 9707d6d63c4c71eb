"""A PostgreSQL server in a Docker container: for the majors and extensions (PostGIS) that no
wheel or installed PostgreSQL here has, as testcontainers' users expect.

It speaks to the engine through the Docker SDK for Python (``pip install 'unmocked[docker]'``),
imported only when the provider is tried, so unmocked works without it:

1. the engine is the one ``DOCKER_HOST`` names (else the default socket), asked with a short
   timeout, so that ``auto`` passes over a machine without one at once;
2. the image is ``unmocked_image``, else ``postgres:<unmocked_pg_version, else 18>``: the engine's
   copy, else pulled, for at most :data:`PULL_TIMEOUT` seconds;
3. the container runs postgres as the official image's entrypoint does (``POSTGRES_PASSWORD``, a
   random one), with the settings of every server unmocked starts
   (:func:`.binaries.tuned_for_tests`) and its data folder on tmpfs; its port 5432 is published on
   127.0.0.1 at a port the engine picks; it is ready once a connection over that port succeeds;
4. its labels (:data:`OWNER`, :data:`PID`, :data:`PID_STARTED`, :data:`RUN`) name the process that
   started it: closing removes it, and a container whose process is provably gone (same account and
   host; no such pid, or a pid started at another moment) is removed by the next start here and by
   ``unmocked gc`` (:func:`collect_abandoned`). A container without the labels, another account's
   or another machine's, is never touched;
5. one ``unmocked up`` starts (``detached``) also carries :data:`DETACHED` and :data:`RECORD`: once
   ``up`` has exited, it is kept while the record in that cache folder names it, and collected
   when none does (the record was deleted, or ``unmocked down`` failed half-way).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from unmocked.errors import ConfigurationError, ServerError
from unmocked.ownership import new_run_id
from unmocked.servers import RunningServer, Server, _process
from unmocked.servers.binaries import tuned_for_tests
from unmocked.settings import Settings
from unmocked.urls import local_url, redact

OWNER = "unmocked.owner"
"""``<uid>@<host>``: who started the container; only that account on that machine removes it."""
PID = "unmocked.pid"
PID_STARTED = "unmocked.pid_started"
"""When that process started (boot id and clock ticks): a pid reused since is told apart."""
RUN = "unmocked.run"
"""The id in the container's name, ``unmocked-<run>``."""
DETACHED = "unmocked.detached"
"""``1`` on the container ``unmocked up`` started: it outlives the process its pid names."""
RECORD = "unmocked.record"
"""The cache folder whose ``unmocked up`` record keeps a detached container."""

DEFAULT_MAJOR = 18
# Asking the engine whether it is there: a local socket answers in milliseconds, and ``auto``
# must not make every run on a machine without an engine wait.
PROBE_TIMEOUT = 3.0
# A postgres image is 150 to 450 MB: minutes on a slow line, never a hang.
PULL_TIMEOUT = 300.0
# An engine call (create, inspect, remove) that takes longer is an engine in trouble.
CALL_TIMEOUT = 60.0
# initdb plus the first start: one to three seconds, longer on a loaded CI machine.
READY_TIMEOUT = 60.0
_INSTALL = "pip install 'unmocked[docker]'"


class Unavailable(ServerError):
    """The docker provider cannot be used here: no SDK, no engine, no image. ``auto`` goes on."""


def image_for(settings: Settings) -> str:
    """``unmocked_image``, else the official image of ``unmocked_pg_version`` (else 18)."""
    return settings.image or f"postgres:{settings.pg_version or DEFAULT_MAJOR}"


def start_container(settings: Settings, detached: bool = False) -> ContainerServer:
    """Start a container from :func:`image_for` and wait until it accepts connections.

    ``detached``: for ``unmocked up``, labelled to outlive this process once
    :meth:`ContainerServer.keep` is called (until then, closing or exiting removes it).

    Raises :class:`Unavailable` saying what is missing (the SDK, an engine, the image), and
    :class:`ConfigurationError` for an image whose major is not ``unmocked_pg_version``.
    """
    client = engine()
    extra: dict[str, str] = {}
    if detached:
        from unmocked.servers._places import cache_folder

        extra = {DETACHED: "1", RECORD: str(cache_folder(settings.cache_dir))}
    image_name = image_for(settings)
    image = _image(client, image_name)
    secret = secrets.token_urlsafe(24)
    env = _environment(image)
    settings_for_tests = [*tuned_for_tests(_major(env, settings, image_name)).items()]
    flags = [
        arg
        for name, value in [*settings_for_tests, *settings.server_settings]
        for arg in ("-c", f"{name}={value}")
    ]
    started = time.monotonic()
    running = run_labelled(
        client,
        image_name,
        command=["postgres", *flags],
        environment={"POSTGRES_PASSWORD": secret, "POSTGRES_USER": "postgres"},
        port="5432/tcp",
        tmpfs=[env.get("PGDATA") or "/var/lib/postgresql/data"],
        labels=extra,
        shm_size="256m",  # parallel queries' shared memory; the engine's default is 64 MB
    )
    container = running.container
    try:
        server = _wait_until_ready(container, image_name, secret, detached)
        if settings.pg_version not in (None, server.major):
            raise ConfigurationError(
                f"unmocked_pg_version = {settings.pg_version}, but unmocked_image = {image_name} "
                f"runs PostgreSQL {server.version}. Set unmocked_image to an image of PostgreSQL "
                f"{settings.pg_version} (postgis/postgis:{settings.pg_version}-3.5, say), or "
                f"unmocked_pg_version = {server.major}."
            )
    except BaseException:
        running.close()
        raise
    running.server = server
    running.phases.record("start", time.monotonic() - started)
    return running


def run_labelled(
    client: Any,
    image_name: str,
    *,
    command: list[str],
    environment: dict[str, str],
    port: str,
    tmpfs: list[str],
    labels: dict[str, str] | None = None,
    **options: Any,
) -> ContainerServer:
    """Start a container from ``image_name`` for this process, whatever server it runs.

    It carries :data:`OWNER`, :data:`PID`, :data:`PID_STARTED` and :data:`RUN` (plus ``labels``),
    so that :func:`collect_abandoned` removes it once this process is provably gone; ``port`` is
    published on 127.0.0.1 at a port the engine picks, and each of ``tmpfs`` is a tmpfs mount (the
    data goes with the container). First it removes what dead runs left: a run that starts one
    cleans up after the runs that died. :class:`ServerError` if the engine will not start it.
    """
    collect_abandoned(client)
    run = new_run_id()
    own = {OWNER: owner(), PID: str(os.getpid()), PID_STARTED: process_started(os.getpid())}
    try:
        container = client.containers.run(
            image_name,  # by name, so that listings and `unmocked gc` say which
            command=command,
            name=f"unmocked-{run}",
            labels={**own, **(labels or {}), RUN: run},
            environment=environment,
            ports={port: ("127.0.0.1", None)},
            tmpfs=dict.fromkeys(tmpfs, "rw"),
            detach=True,
            **options,
        )
    except Exception as error:  # the SDK's APIError, or requests' for an engine that went away
        raise ServerError(
            f"The Docker engine at {_where()} could not start a container from {image_name}: "
            f"{_short(error)}"
        ) from None
    return ContainerServer(container)


class ContainerServer(RunningServer):
    """A container we started: removed (with its data, on tmpfs) when closed."""

    def __init__(self, container: Any) -> None:
        super().__init__(Server(url="postgresql://", version="", major=0, provider="docker"))
        self.container = container
        self._owner = os.getpid()
        self._closed = False
        atexit.register(self.close)

    def keep(self) -> None:
        """Let the container outlive this process (``unmocked up``, once its record is written)."""
        self._closed = True
        atexit.unregister(self.close)

    def close(self) -> None:
        """Remove the container; safe to call twice, and a no-op in a forked child."""
        if self._closed or os.getpid() != self._owner:
            return
        self._closed = True
        atexit.unregister(self.close)
        # Killed, not stopped: its data is on tmpfs and goes with it, so a clean shutdown buys
        # nothing and a smart one would wait for every session.
        # An error says it is gone already (removed by hand, or the engine stopped).
        with contextlib.suppress(Exception):
            self.container.remove(force=True)

    def died(self) -> str | None:
        """How the container ended, with its log's last lines; None while it runs."""
        if self._closed:
            return None
        try:
            self.container.reload()
        except Exception:
            return f"its container {self.container.name} is gone (removed by someone else?)."
        if self.container.status == "running":
            return None
        code = self.container.attrs.get("State", {}).get("ExitCode")
        return (
            f"its container {self.container.name} {self.container.status} (exit code {code}). "
            f"Last lines of its log (docker logs {self.container.name}):\n  "
            + logs(self.container).replace("\n", "\n  ")
        )


def engine() -> Any:
    """A Docker SDK client of the engine that answers, or :class:`Unavailable` saying why not."""
    try:
        import docker
    except ImportError:
        raise Unavailable(f"the Docker SDK for Python is not installed ({_INSTALL})") from None
    try:
        client = docker.from_env(timeout=PROBE_TIMEOUT)
        client.ping()
    except Exception as error:  # DockerException, or requests' errors for a dead socket
        raise Unavailable(
            f"no Docker engine answers at {_where()} ({_short(error)}); start one, or set "
            "DOCKER_HOST to one that runs"
        ) from None
    client.api.timeout = CALL_TIMEOUT
    return client


def describe_engine(settings: Settings) -> str:
    """One line for ``unmocked doctor``: the engine, its PostgreSQL images and the one a run
    would use; or why there is none."""
    try:
        client = engine()
    except Unavailable as error:
        return str(error)
    return (
        f"engine at {_where()}, images {_postgres_images(client)}; a run uses {image_for(settings)}"
    )


def _postgres_images(client: Any) -> str:
    """The engine's images whose names say postgres or postgis, for people."""
    named = image_tags(client, lambda tag: "postgres" in tag or "postgis" in tag)
    return ", ".join(named) or "none named postgres or postgis"


def image_tags(client: Any, wanted: Callable[[str], bool]) -> list[str]:
    """The engine's image tags that ``wanted`` keeps, sorted: what a paragraph offers instead."""
    return sorted(tag for image in client.images.list() for tag in image.tags if wanted(tag))


def collect_abandoned(client: Any) -> list[str]:
    """Remove the containers of this account and machine whose process is provably gone; return a
    line for each (``unmocked gc`` prints them)."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{OWNER}={owner()}"}):
        why = _why_abandoned(container.labels, container.id)
        if why is None:
            continue
        try:
            container.remove(force=True)
        except Exception:  # another collector removed it first
            continue
        image = container.attrs.get("Config", {}).get("Image", "?")
        removed.append(f"container {container.name} (from {image}): {why}")
    return removed


def owner() -> str:
    return f"{os.geteuid()}@{socket.gethostname()}"


def process_started(pid: int) -> str:
    """When ``pid`` started, as a mark that a pid reused later does not repeat; empty where
    ``/proc`` cannot tell (macOS: there only the pid counts)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return f"{boot}/{stat.rsplit(')', 1)[-1].split()[19]}"  # field 22, starttime


def _why_abandoned(labels: dict[str, str], container_id: str) -> str | None:
    """Why the container these labels describe is provably left by a dead run; None if not.

    One ``unmocked up`` started is kept, once ``up`` has exited, while its record names it.
    """
    if labels.get(OWNER) != owner():
        return None
    dead = _why_dead(labels)
    if dead is None or labels.get(DETACHED) != "1":
        return dead
    from unmocked.servers import persistent

    folder = Path(labels.get(RECORD, ""))
    if folder.is_absolute() and persistent.records_container(folder, container_id):
        return None
    return f"`unmocked up` started it and no record names it now (in {folder})"


def _why_dead(labels: dict[str, str]) -> str | None:
    """Why the process the labels name provably no longer runs; None if it may."""
    try:
        pid = int(labels[PID])
    except (KeyError, ValueError):
        return None
    if not _process.is_alive(pid):
        return f"its run (pid {pid}) no longer runs"
    started = labels.get(PID_STARTED, "")
    now = process_started(pid)
    if started and now and now != started:
        return f"its run (pid {pid}) no longer runs; another process has that pid now"
    return None


def _image(client: Any, name: str) -> Any:
    """The engine's PostgreSQL image ``name``, pulled when it has none; :class:`Unavailable` if
    it cannot, saying which images it has."""
    return find_image(
        client,
        name,
        lambda: (
            f"set unmocked_image to an image the engine has ({_postgres_images(client)}) and "
            "unmocked_pg_version to its major"
        ),
    )


def find_image(client: Any, name: str, instead: Callable[[], str]) -> Any:
    """The engine's image ``name``, pulled when it has none; :class:`Unavailable` if it cannot,
    ending with ``instead()``: what else the reader can do (asked only then)."""
    import docker

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        pass
    pulled: dict[str, Any] = {}

    def pull() -> None:
        try:
            # A client of its own: one that outlives the wait must not share our connections.
            pulled["image"] = docker.from_env(timeout=PULL_TIMEOUT).images.pull(name)
        except Exception as error:
            pulled["error"] = error

    # In a thread: the SDK bounds each read, not the whole pull, which a slow registry can drag
    # out for good. A pull that outlives the wait goes on in the engine, which is harmless.
    puller = threading.Thread(target=pull, name="unmocked-docker-pull", daemon=True)
    puller.start()
    puller.join(PULL_TIMEOUT)
    if "image" in pulled:
        return pulled["image"]
    failed = (
        f"pulling it failed: {_short(pulled['error'])}"
        if "error" in pulled
        else f"pulling it did not finish within {PULL_TIMEOUT:.0f} seconds"
    )
    raise Unavailable(
        f"the Docker engine at {_where()} has no image {name}, and {failed}. Pull or build it "
        f"(docker pull {name}), or {instead()}."
    )


def _environment(image: Any) -> dict[str, str]:
    """The image's ENV lines, as a mapping."""
    pairs = (item.partition("=") for item in image.attrs["Config"].get("Env") or [])
    return {name: value for name, _, value in pairs}


def _major(env: dict[str, str], settings: Settings, image_name: str) -> int:
    """The image's PostgreSQL major, for the settings that depend on it (``io_method`` is 18's).

    From its ``PG_MAJOR`` (the official images and those built on them set it), else
    ``unmocked_pg_version``, else the tag's first number (``postgis/postgis:17-3.5``); else 11,
    whose settings every later major takes too.
    """
    tag = image_name.rpartition(":")[2]
    digits = tag[: len(tag) - len(tag.lstrip("0123456789"))]
    for found in (env.get("PG_MAJOR", ""), str(settings.pg_version or ""), digits):
        if found.isdigit():
            return int(found)
    return 11


def _wait_until_ready(container: Any, image_name: str, secret: str, detached: bool) -> Server:
    """The server in ``container`` once it accepts connections on its published port.

    The official image's entrypoint first runs a server for its init scripts that listens on a
    Unix socket only, so a connection over TCP reaches the server that stays.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        container.reload()
        if container.status not in ("created", "running"):
            raise ServerError(
                f"The container {container.name} from {image_name} {container.status} before "
                f"PostgreSQL accepted connections. Last lines of its log:\n  "
                + logs(container).replace("\n", "\n  ")
            )
        published = (container.ports.get("5432/tcp") or [{}])[0].get("HostPort")
        if published:
            url = local_url("127.0.0.1", int(published), "postgres", secret)
            try:
                with psycopg.connect(url, connect_timeout=2) as conn:
                    row = conn.execute(
                        "SELECT current_setting('server_version'), "
                        "current_setting('server_version_num')::int / 10000"
                    ).fetchone()
                assert row is not None
                return Server(
                    url=url,
                    version=str(row[0]).split()[0],
                    major=int(row[1]),
                    provider="docker",
                    owned=True,
                    detached=detached,
                    image=image_name,
                )
            except psycopg.OperationalError as error:
                last = redact(str(error)).strip()
        else:
            last = "its port 5432 is not published yet"
        if time.monotonic() > deadline:
            raise ServerError(
                f"PostgreSQL in the container {container.name} from {image_name} did not accept "
                f"connections within {READY_TIMEOUT:.0f} seconds ({last}). Last lines of its "
                "log:\n  " + logs(container).replace("\n", "\n  ")
            )
        time.sleep(0.05)


def detached_state(container_id: str) -> tuple[int, float] | None:
    """``(pid, start time)`` of the running container ``unmocked up`` started here, by id; None
    when it is gone, stopped, not such a container, or no engine answers (a record of it is
    stale)."""
    try:
        container = engine().containers.get(container_id)
    except Exception:  # Unavailable, NotFound, or an engine that went away
        return None
    labels = container.labels
    if container.status != "running" or labels.get(OWNER) != owner() or labels.get(DETACHED) != "1":
        return None
    state = container.attrs.get("State", {})
    return int(state.get("Pid") or 0), _timestamp(str(state.get("StartedAt", "")))


def remove_detached(container_id: str) -> None:
    """Remove the container ``unmocked up`` started (never one without our labels); gone already
    is fine."""
    import docker

    try:
        container = engine().containers.get(container_id)
    except docker.errors.NotFound:
        return
    labels = container.labels
    if labels.get(OWNER) != owner() or labels.get(DETACHED) != "1":
        return
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        return
    except Exception as error:
        raise ServerError(
            f"The Docker engine at {_where()} would not remove the container {container.name}: "
            f"{_short(error)}. Remove it (docker rm -f {container.name}) and run `unmocked down` "
            "again."
        ) from None


def _timestamp(started: str) -> float:
    """The engine's ``StartedAt`` (RFC 3339, nanoseconds) as seconds since the epoch; 0 if odd."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return 0.0


def logs(container: Any, lines: int = 10) -> str:
    """The container's last ``lines`` of log, passwords hidden, for a paragraph."""
    try:
        return redact(container.logs(tail=lines).decode(errors="replace").strip()) or "(empty)"
    except Exception:
        return "(the engine gave no log)"


def _where() -> str:
    return os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"


def _short(error: BaseException) -> str:
    """The SDK's errors in one line: they carry the engine's whole HTTP exchange."""
    return " ".join(str(error).split())[:300]
