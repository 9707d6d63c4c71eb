"""MongoDB: a database per test, named for its run, dropped after it; nothing else is dropped.

The tests of the rules (names, what a collection drops, URLs, the paragraph when no server exists,
a suite without mongo fixtures) run everywhere. The tests that need a MongoDB server run for real
when ``UNMOCKED_MONGODB_URL`` is set or a ``mongod`` is on PATH, and skip with that reason
otherwise: no MongoDB server can be installed on the machines this project is built on, and a fake
one (mongomock) would test nothing this module promises. The Docker source's tests need an engine
that answers; the one that starts a container also needs a ``mongo:*`` image there.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import embedded_env, needs_embedded, outcomes, run_pytest, write_files
from unmocked import ownership
from unmocked.errors import ConfigurationError
from unmocked.mongo import databases, sources

MONGODB_URL = os.environ.get(sources.URL_SETTING, "").strip()
HAS_PYMONGO = importlib.util.find_spec("pymongo") is not None
needs_mongodb = pytest.mark.skipif(
    not HAS_PYMONGO or not (MONGODB_URL or shutil.which("mongod")),
    reason="no MongoDB server here: set UNMOCKED_MONGODB_URL or put mongod on PATH (and install "
    "pymongo) to run this test",
)
needs_mongodb_url = pytest.mark.skipif(
    not HAS_PYMONGO or not MONGODB_URL,
    reason="needs a shared MongoDB server: set UNMOCKED_MONGODB_URL (and install pymongo)",
)


def mongo_env(cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a pytest run of its own: this machine's MongoDB source, if any."""
    env = embedded_env(cache, **extra)
    if MONGODB_URL:
        env[sources.URL_SETTING] = MONGODB_URL
    return env


# -- the rules, everywhere -----------------------------------------------------------------------


def test_a_database_name_carries_the_prefix_the_run_and_the_kind() -> None:
    run = ownership.new_run_id()
    name = ownership.run_database_name(run, databases.KIND, 3)
    assert name == f"unmocked_{run}_mongo_3"
    assert ownership.run_in_name(name) == (run, "mongo")


def test_two_runs_or_xdist_workers_never_name_the_same_database() -> None:
    # Each xdist worker is a process with a session, and a run id, of its own.
    runs = {ownership.new_run_id() for _ in range(50)}
    names = {ownership.run_database_name(run, databases.KIND, 1) for run in runs}
    assert len(names) == len(runs) == 50


def test_postgresql_databases_are_named_by_the_same_rule() -> None:
    made_by = ownership.run_in_name(ownership.run_database_name("0123456789", "fresh", 12))
    assert made_by == ("0123456789", "fresh")


def test_a_collection_drops_only_our_databases_of_runs_no_longer_alive() -> None:
    dead, live = "0123456789", "abcdef0123"
    names = [
        f"unmocked_{dead}_mongo_1",
        f"unmocked_{dead}_mongo_22",
        f"unmocked_{live}_mongo_1",
        f"unmocked_{dead}_fresh_1",  # a PostgreSQL kind: not a MongoDB database of ours
        "unmocked_notes",  # looks like ours; not made by a run
        f"unmocked_{dead}_mongo_1_backup",
        f"unmocked_{dead[:9]}_mongo_1",
        f"Unmocked_{dead}_mongo_1",
        "shop",
        "admin",
        "local",
        "config",
    ]
    assert databases.abandoned(names, {live}) == [
        f"unmocked_{dead}_mongo_1",
        f"unmocked_{dead}_mongo_22",
    ]


def test_a_run_is_alive_by_the_app_name_of_its_client() -> None:
    assert databases.lease_name("0123456789") == "unmocked_run_0123456789"
    assert ownership.run_in_name(databases.COLLECTOR_NAME) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017/unmocked_x"),
        ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/unmocked_x"),
        (
            "mongodb://app:s%40cret@h1:1,h2:2/?replicaSet=rs0",
            "mongodb://app:s%40cret@h1:1,h2:2/unmocked_x?replicaSet=rs0&authSource=admin",
        ),
        (
            "mongodb://app:pw@h/accounts",
            "mongodb://app:pw@h/unmocked_x?authSource=accounts",
        ),
        (
            "mongodb+srv://app:pw@cluster.example.net/?authSource=users",
            "mongodb+srv://app:pw@cluster.example.net/unmocked_x?authSource=users",
        ),
    ],
)
def test_a_test_database_url_names_it_and_logs_in_where_the_setting_did(
    given: str, expected: str
) -> None:
    url = databases.with_database(given, "unmocked_x")
    assert url == expected
    assert "pw" not in repr(url) and "cret" not in repr(url)


def test_the_url_setting_must_be_a_mongodb_url_and_is_never_printed_with_its_password() -> None:
    with pytest.raises(ConfigurationError) as raised:
        sources.mongodb_url("postgresql://app:hunter2@db.example/app")
    assert sources.URL_SETTING in str(raised.value)
    assert "hunter2" not in str(raised.value)


def _path_without_mongod() -> str:
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(f for f in folders if f and not (Path(f) / "mongod").exists())


def test_asking_for_mongo_db_without_any_server_says_the_three_ways_to_get_one(
    tmp_path: Path,
) -> None:
    pytest.importorskip("pytest_asyncio")
    project = write_files(
        tmp_path / "project",
        {
            "test_store.py": """
                def test_orders_total(mongo_db):
                    raise AssertionError("mongo_db was given without a server")

                def test_orders_url(mongo_url):
                    raise AssertionError("mongo_url was given without a server")

                async def test_orders_async(mongo_db_async):
                    raise AssertionError("mongo_db_async was given without a server")
            """,
            "pytest.ini": "[pytest]\nasyncio_mode = auto\n"
            "asyncio_default_fixture_loop_scope = function\n",
        },
    )
    env = embedded_env(
        tmp_path / "cache", PATH=_path_without_mongod(), DOCKER_HOST=f"unix://{tmp_path}/no.sock"
    )
    report = tmp_path / "report.xml"
    result = run_pytest("-p", "no:randomly", f"--junitxml={report}", env=env, cwd=project)
    found = outcomes(report)
    assert [outcome for outcome, _ in found.values()] == ["error"] * 3, result.stdout
    paragraph = " ".join(result.stdout.split())
    for way in (
        "set UNMOCKED_MONGODB_URL",
        "mongod is on PATH",
        "Docker cannot serve (no Docker engine answers at unix://",
        "when the engine answers, unmocked starts a container from "
        "mongo:<UNMOCKED_MONGODB_VERSION, default 8>",
        "pip install 'unmocked[mongo]'",
    ):
        assert way in paragraph, result.stdout
    assert "Traceback" not in result.stdout and "unmocked/mongo" not in result.stdout
    assert "unmocked: PostgreSQL" not in result.stdout  # MongoDB fixtures start no PostgreSQL


def test_the_docker_image_is_mongo_of_the_version_setting() -> None:
    assert sources.image_for("") == "mongo:8"
    assert sources.image_for(" 7.0 ") == "mongo:7.0"
    with pytest.raises(ConfigurationError, match="UNMOCKED_MONGODB_VERSION is '8; rm'"):
        sources.image_for("8; rm")


BLOCK_PYMONGO = """
import sys


class NotInstalled:
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname.partition(".")[0] == "pymongo":
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, NotInstalled())
"""

ONE_MONGO_TEST = {"test_store.py": "def test_orders(mongo_db):\n    raise AssertionError\n"}


def test_without_pymongo_the_error_says_how_to_install_it(tmp_path: Path) -> None:
    site = write_files(tmp_path / "site", {"sitecustomize.py": BLOCK_PYMONGO})
    project = write_files(tmp_path / "project", ONE_MONGO_TEST)
    env = embedded_env(tmp_path / "cache", UNMOCKED_MONGODB_URL="mongodb://127.0.0.1:1/")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    result = run_pytest("-p", "no:randomly", env=env, cwd=project)
    assert result.returncode == 1, result.stdout
    assert "need pymongo 4.10 or later" in result.stdout
    assert "pip install 'unmocked[mongo]'" in " ".join(result.stdout.split())


@pytest.mark.skipif(not HAS_PYMONGO, reason="pymongo is not installed")
def test_a_server_that_does_not_answer_is_named_without_its_password(tmp_path: Path) -> None:
    project = write_files(tmp_path / "project", ONE_MONGO_TEST)
    # Nothing listens on port 1; the URL's own wait is kept (the default is 10 s).
    url = "mongodb://app:hunter2@127.0.0.1:1/?serverSelectionTimeoutMS=1500"
    env = embedded_env(tmp_path / "cache", UNMOCKED_MONGODB_URL=url)
    result = run_pytest("-p", "no:randomly", env=env, cwd=project)
    assert result.returncode == 1, result.stdout
    paragraph = " ".join(result.stdout.split())
    assert (
        "(mongodb://app:***@127.0.0.1:1/?serverSelectionTimeoutMS=1500) did not answer within "
        "1.5 s" in paragraph
    )
    assert "hunter2" not in result.stdout + result.stderr


@needs_embedded
@pytest.mark.skipif(not HAS_PYMONGO, reason="pymongo is not installed")
def test_unmocked_gc_says_why_it_could_not_collect_on_mongodb(tmp_path: Path) -> None:
    from helpers import run_unmocked

    url = "mongodb://app:hunter2@127.0.0.1:1/?serverselectiontimeoutms=1000"  # nobody on port 1
    env = embedded_env(tmp_path / "cache", UNMOCKED_MONGODB_URL=url)
    result = run_unmocked("gc", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unmocked gc: MongoDB not collected: MongoDB at UNMOCKED_MONGODB_URL" in result.stdout
    assert "did not answer within 1 s" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("url", "wait"),
    [
        ("mongodb://127.0.0.1:1/", 10_000),
        ("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=250", 250),
        ("mongodb://127.0.0.1:1/db?replicaSet=rs&SERVERSELECTIONTIMEOUTMS=1500.0", 1500),
        ("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=soon", 10_000),  # pymongo says so
    ],
)
def test_a_urls_own_server_selection_timeout_is_kept(url: str, wait: int) -> None:
    assert databases.selection_timeout_ms(url) == wait


@needs_embedded
def test_a_suite_without_mongo_fixtures_never_imports_pymongo(tmp_path: Path) -> None:
    if not HAS_PYMONGO:
        pytest.skip("pymongo is not installed: a suite cannot import it anyway")
    imported = tmp_path / "imported.txt"
    project = write_files(
        tmp_path / "project",
        {
            "conftest.py": """
                import os
                import sys

                PYMONGO = ("pymongo", "bson", "gridfs")

                def pytest_unconfigure(config):
                    found = sorted(n for n in sys.modules if n.split(".")[0] in PYMONGO)
                    with open(os.environ["IMPORTED_FILE"], "w") as out:
                        out.write(" ".join(found))
            """,
            "test_app.py": """
                def test_pg_answers(pg):
                    assert pg.execute("SELECT 1").fetchone() == (1,)
            """,
        },
    )
    env = embedded_env(tmp_path / "cache", IMPORTED_FILE=str(imported))
    result = run_pytest("-p", "no:randomly", env=env, cwd=project)
    assert result.returncode == 0, result.stdout
    assert "unmocked: PostgreSQL" in result.stdout
    assert imported.read_text() == ""


# -- on a real MongoDB server --------------------------------------------------------------------


@needs_mongodb
def test_each_test_gets_a_database_of_its_own_dropped_after_it(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    project = write_files(
        tmp_path / "project",
        {
            "test_orders.py": """
                import os

                import pymongo

                def remember(name):
                    with open(os.environ["NAMES_FILE"], "a") as out:
                        out.write(name + "\\n")

                def test_the_pipeline_totals_by_customer(mongo_db):
                    remember(mongo_db.name)
                    mongo_db.orders.insert_many(
                        [{"customer": "ada", "total": 5}, {"customer": "ada", "total": 7},
                         {"customer": "bob", "total": 1}]
                    )
                    totals = list(mongo_db.orders.aggregate([
                        {"$group": {"_id": "$customer", "sum": {"$sum": "$total"}}},
                        {"$sort": {"_id": 1}},
                    ]))
                    assert totals == [{"_id": "ada", "sum": 12}, {"_id": "bob", "sum": 1}]

                def test_the_next_test_sees_none_of_it(mongo_db):
                    remember(mongo_db.name)
                    assert mongo_db.list_collection_names() == []
                    mongo_db.orders.insert_one({"customer": "cy"})

                def test_the_url_reaches_a_database_of_its_own(mongo_url):
                    with pymongo.MongoClient(mongo_url) as client:
                        database = client.get_default_database()
                        remember(database.name)
                        assert database.name.startswith("unmocked_")
                        assert database.list_collection_names() == []
                        database.orders.insert_one({"customer": "di"})
            """,
        },
    )
    env = mongo_env(tmp_path / "cache", NAMES_FILE=str(names))
    result = run_pytest("-p", "no:randomly", env=env, cwd=project)
    assert result.returncode == 0, result.stdout
    assert "unmocked: PostgreSQL" not in result.stdout
    made = names.read_text().split()
    assert len(set(made)) == 3
    runs = {ownership.run_in_name(name) for name in made}
    assert len(runs) == 1 and next(iter(runs))[1] == "mongo"  # type: ignore[index]
    if MONGODB_URL:
        import pymongo

        with pymongo.MongoClient(MONGODB_URL) as client:
            assert not set(made) & set(client.list_database_names())


@needs_mongodb
def test_the_async_twin_serves_the_tests_event_loop(tmp_path: Path) -> None:
    pytest.importorskip("pytest_asyncio")
    project = write_files(
        tmp_path / "project",
        {
            "pytest.ini": "[pytest]\nasyncio_mode = auto\n",
            "test_orders.py": """
                from pymongo.asynchronous.database import AsyncDatabase

                async def test_insert_and_find(mongo_db_async):
                    assert isinstance(mongo_db_async, AsyncDatabase)
                    await mongo_db_async.orders.insert_one({"customer": "ada"})
                    found = await mongo_db_async.orders.find_one({}, {"_id": 0})
                    assert found == {"customer": "ada"}

                async def test_the_next_one_starts_empty(mongo_db_async):
                    assert await mongo_db_async.list_collection_names() == []
            """,
        },
    )
    result = run_pytest(
        "-p",
        "no:randomly",
        "-W",
        "error::ResourceWarning",
        env=mongo_env(tmp_path / "c"),
        cwd=project,
    )
    assert result.returncode == 0, result.stdout


@needs_mongodb
def test_xdist_workers_each_get_databases_of_their_own(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    tests = "\n".join(
        f"def test_{n}(mongo_db):\n"
        f"    assert mongo_db.list_collection_names() == []\n"
        f"    mongo_db.things.insert_one({{'n': {n}}})\n"
        for n in range(8)
    )
    project = write_files(tmp_path / "project", {"test_many.py": tests})
    result = run_pytest("-p", "no:randomly", "-n", "2", env=mongo_env(tmp_path / "c"), cwd=project)
    assert result.returncode == 0, result.stdout
    assert "unmocked: PostgreSQL" not in result.stdout


@pytest.fixture
def mongo_admin() -> Iterator[object]:
    import pymongo

    with pymongo.MongoClient(MONGODB_URL, serverSelectionTimeoutMS=10_000) as client:
        yield client


@needs_mongodb_url
def test_a_run_drops_what_dead_runs_left_and_nothing_else(
    tmp_path: Path, mongo_admin: object
) -> None:
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = mongo_admin  # type: ignore[assignment]
    dead, live = ownership.new_run_id(), ownership.new_run_id()
    left = ownership.run_database_name(dead, "mongo", 1)
    lives_on = ownership.run_database_name(live, "mongo", 1)
    users = ["h_mongo_shop", f"{ownership.PREFIX}notes_h_mongo"]
    with pymongo.MongoClient(MONGODB_URL, appName=databases.lease_name(live)) as live_run:
        live_run.admin.command("ping")
        try:
            for name in (left, lives_on, *users):
                client[name].things.insert_one({"kept": True})
            project = write_files(
                tmp_path / "project", {"test_one.py": "def test_one(mongo_db):\n    pass\n"}
            )
            result = run_pytest("-p", "no:randomly", env=mongo_env(tmp_path / "c"), cwd=project)
            assert result.returncode == 0, result.stdout
            there = set(client.list_database_names())
            assert left not in there
            assert {lives_on, *users} <= there
        finally:
            for name in (left, lives_on, *users):
                client.drop_database(name)


@needs_mongodb_url
def test_unmocked_gc_drops_dead_runs_mongodb_databases(tmp_path: Path, mongo_admin: object) -> None:
    from helpers import run_unmocked

    client = mongo_admin
    left = ownership.run_database_name(ownership.new_run_id(), "mongo", 1)
    client[left].things.insert_one({"kept": False})  # type: ignore[index]
    try:
        result = run_unmocked("gc", env=mongo_env(tmp_path / "c"), cwd=tmp_path)
        assert f"dropped {left}" in result.stdout, result.stdout
        assert left not in client.list_database_names()  # type: ignore[attr-defined]
    finally:
        client.drop_database(left)  # type: ignore[attr-defined]


@pytest.mark.skipif(
    MONGODB_URL or not shutil.which("mongod") or not HAS_PYMONGO,
    reason="needs mongod on PATH and no UNMOCKED_MONGODB_URL (which would be used instead)",
)
def test_a_mongod_on_path_runs_in_ram_as_our_child_and_stops_with_the_run(tmp_path: Path) -> None:
    where = tmp_path / "where.txt"
    project = write_files(
        tmp_path / "project",
        {
            "test_one.py": """
                import os

                def test_one(mongo_db, unmocked_mongo):
                    mongo_db.things.insert_one({})
                    with open(os.environ["WHERE_FILE"], "w") as out:
                        out.write(f"{unmocked_mongo.source.where}")
            """
        },
    )
    env = mongo_env(tmp_path / "c", WHERE_FILE=str(where))
    result = run_pytest("-p", "no:randomly", env=env, cwd=project)
    assert result.returncode == 0, result.stdout
    described = where.read_text()
    pid = int(described.split("pid ")[1].split(")")[0])
    if Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 2 << 30:
        assert "/dev/shm/" in described
    from helpers import wait_until_gone

    assert wait_until_gone(pid)


@pytest.mark.skipif(not HAS_PYMONGO, reason="pymongo is not installed")
def test_a_mongod_that_exits_as_it_starts_is_said_with_its_log_and_frees_its_slot(
    tmp_path: Path,
) -> None:
    # Not a stand-in for mongod: a real program that exits at once, as a broken mongod would.
    from unmocked.errors import MongoError
    from unmocked.servers.mongod import start_mongod

    for _ in range(2):  # the second start finds the first's slot free again
        with pytest.raises(MongoError, match="exited with status 1 as it started") as raised:
            start_mongod(shutil.which("false") or "/bin/false", tmp_path / "cache")
    assert "slot-0" in str(raised.value)


# -- in a Docker container -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Any:
    from unmocked.servers import containers

    try:
        return containers.engine()
    except containers.Unavailable as error:
        pytest.skip(f"the Docker source cannot be tested here: {error}")


@pytest.fixture
def ours(engine: Any) -> Iterator[None]:
    """The engine's unmocked containers to this test alone, as test_docker.py's tests take them
    (the same lock file); after it, whatever its runs left is removed."""
    from unmocked.servers import containers

    with open(Path(tempfile.gettempdir()) / "unmocked-test-docker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
        containers.collect_abandoned(engine)


def _mongo_containers(engine: Any) -> list[str]:
    from unmocked.servers import containers

    listed = engine.containers.list(all=True, filters={"label": containers.OWNER})
    return [c.name for c in listed if c.attrs["Config"]["Image"].startswith("mongo")]


def _docker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No URL and no mongod: the Docker source is the one left."""
    return embedded_env(tmp_path / "cache", PATH=_path_without_mongod(), **extra)


@pytest.mark.skipif(not HAS_PYMONGO, reason="pymongo is not installed")
def test_an_engine_without_the_image_is_one_paragraph_naming_it_not_a_hang(
    engine: Any, ours: None, tmp_path: Path
) -> None:
    from unmocked.servers import containers

    if any("mongo:8" in image.tags for image in engine.images.list()):
        pytest.skip("this engine has mongo:8")
    before = _mongo_containers(engine)
    project = write_files(tmp_path / "project", ONE_MONGO_TEST)
    began = time.monotonic()
    result = run_pytest(
        "-p",
        "no:randomly",
        env=_docker_env(tmp_path),
        cwd=project,
        timeout=containers.PULL_TIMEOUT + 60,
    )
    took = time.monotonic() - began
    assert result.returncode == 1, result.stdout
    paragraph = " ".join(result.stdout.split())
    for said in (
        "UNMOCKED_MONGODB_URL is not set, no mongod is on PATH, and the Docker engine at ",
        "has no image mongo:8, and pulling it ",
        "(docker pull mongo:8), or set UNMOCKED_MONGODB_VERSION to the tag of a mongo image the "
        "engine has (",
        "Or get one another way: set UNMOCKED_MONGODB_URL to a server you run",
        "so that mongod is on PATH",
    ):
        assert said in paragraph, result.stdout
    assert "Traceback" not in result.stdout
    assert took < containers.PULL_TIMEOUT + 30  # a registry that answers: a failed pull; none: fast
    assert _mongo_containers(engine) == before


def _a_mongo_image(engine: Any) -> str:
    tags: list[str] = sorted(
        t for image in engine.images.list() for t in image.tags if t.startswith("mongo:")
    )
    if not tags:
        pytest.skip("the Docker engine has no mongo:* image (docker pull mongo:8 to run this test)")
    return tags[-1]


@pytest.mark.skipif(not HAS_PYMONGO, reason="pymongo is not installed")
def test_a_mongo_container_serves_a_database_per_test_and_is_gone_after(
    engine: Any, ours: None, tmp_path: Path
) -> None:
    tag = _a_mongo_image(engine).partition(":")[2]
    names, where = tmp_path / "names.txt", tmp_path / "where.txt"
    project = write_files(
        tmp_path / "project",
        {
            "test_orders.py": """
                import os

                def remember(name):
                    with open(os.environ["NAMES_FILE"], "a") as out:
                        out.write(name + "\\n")

                def test_one(mongo_db, unmocked_mongo):
                    remember(mongo_db.name)
                    with open(os.environ["WHERE_FILE"], "w") as out:
                        out.write(unmocked_mongo.source.where)
                    mongo_db.orders.insert_one({"customer": "ada"})

                def test_two(mongo_db):
                    remember(mongo_db.name)
                    assert mongo_db.list_collection_names() == []
            """,
        },
    )
    env = _docker_env(
        tmp_path, NAMES_FILE=str(names), WHERE_FILE=str(where), UNMOCKED_MONGODB_VERSION=tag
    )
    result = run_pytest("-p", "no:randomly", env=env, cwd=project, timeout=180)
    assert result.returncode == 0, result.stdout
    assert len(set(names.read_text().split())) == 2
    name = where.read_text().split()[1]
    assert (
        where.read_text().startswith("container unmocked-")
        and f"(from mongo:{tag})" in where.read_text()
    )
    assert name not in _mongo_containers(engine)
