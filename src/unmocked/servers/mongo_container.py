"""A MongoDB server in a Docker container from ``mongo:<version>``, for a run that has neither
``UNMOCKED_MONGODB_URL`` nor a ``mongod`` on PATH.

By the rules of the PostgreSQL containers (:mod:`unmocked.servers.containers`), through the same
functions: the engine asked with a short timeout, the image the engine's or pulled within a bound,
the labels that let :func:`~unmocked.servers.containers.collect_abandoned` remove a dead run's
container (by its labels alone, whatever its image), the data on tmpfs, the port published on
127.0.0.1 at a port the engine picks, and the container removed when the run closes it.

The official image creates a root user from ``MONGO_INITDB_ROOT_*`` (a random password), as the
PostgreSQL containers ask one: another account on the machine cannot use the server. Its
entrypoint first runs a mongod for that which listens inside the container only, so a ``ping``
that logs in over the published port reaches the server that stays.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from unmocked.errors import MongoError
from unmocked.servers import containers
from unmocked.servers.containers import ContainerServer

# The entrypoint's first mongod (creating the user), then the one that stays: seconds.
READY_TIMEOUT = 60.0
_PORT = "27017/tcp"
_USER = "unmocked"


def start(
    client: Any, image_name: str, instead: Callable[[str], str]
) -> tuple[str, str, ContainerServer]:
    """Start a container from ``image_name`` on the engine ``client`` speaks to (see
    :func:`containers.engine`): its admin URL once it answers ``ping``, where it is in words
    (no password), and the container to close (which removes it).

    :class:`containers.Unavailable` when the engine has no such image and cannot pull it (its
    message ends with ``instead(the engine's mongo images)``); ``ServerError`` when the engine
    will not start it; :class:`MongoError` when it does not serve.
    """
    containers.find_image(client, image_name, lambda: instead(mongo_images(client)))
    secret = secrets.token_urlsafe(24)
    running = containers.run_labelled(
        client,
        image_name,
        command=[
            "mongod",
            # Tests hold little data: the default cache (half the RAM) would be the machine's.
            "--wiredTigerCacheSizeGB",
            "0.25",
            "--setParameter",
            "diagnosticDataCollectionEnabled=false",
        ],
        environment={"MONGO_INITDB_ROOT_USERNAME": _USER, "MONGO_INITDB_ROOT_PASSWORD": secret},
        port=_PORT,
        # Both of the image's volumes: on tmpfs, no anonymous volume outlives the container.
        tmpfs=["/data/db", "/data/configdb"],
    )
    try:
        url, port = _wait_until_ready(running.container, image_name, secret)
    except BaseException:
        running.close()
        raise
    return (
        url,
        f"container {running.container.name} (from {image_name}) on 127.0.0.1:{port}",
        running,
    )


def mongo_images(client: Any) -> str:
    """The engine's images whose names start with ``mongo``, for the paragraph."""
    return ", ".join(containers.image_tags(client, lambda tag: tag.startswith("mongo"))) or "none"


def _wait_until_ready(container: Any, image_name: str, secret: str) -> tuple[str, str]:
    """The admin URL and its port once the server logs us in and answers ``ping`` over the
    published port; :class:`MongoError` with the container's log if it exits first or is not
    ready within :data:`READY_TIMEOUT` seconds."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    deadline = time.monotonic() + READY_TIMEOUT
    last = f"its port {_PORT} is not published yet"
    while time.monotonic() < deadline:
        container.reload()
        if container.status not in ("created", "running"):
            raise MongoError(
                f"The container {container.name} from {image_name} {container.status} before "
                "MongoDB answered. Last lines of its log:\n  "
                + containers.logs(container).replace("\n", "\n  ")
            )
        published = (container.ports.get(_PORT) or [{}])[0].get("HostPort")
        if published:
            url = f"mongodb://{_USER}:{quote(secret, safe='')}@127.0.0.1:{published}/"
            client: MongoClient[dict[str, Any]] = MongoClient(
                url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
            )
            try:
                client.admin.command("ping")
                return url, published
            except PyMongoError as error:
                last = str(error).replace(secret, "***").split(", Timeout:")[0]
            finally:
                client.close()
        time.sleep(0.1)
    raise MongoError(
        f"MongoDB in the container {container.name} from {image_name} did not answer within "
        f"{READY_TIMEOUT:.0f} seconds ({last}). Last lines of its log:\n  "
        + containers.logs(container).replace("\n", "\n  ")
    )
