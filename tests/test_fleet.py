"""Many runs, one server: a fleet of pytest runs shares a PostgreSQL server, and runs on other
"machines" are respected (docs/fleet.md).

The server is a throwaway PostgreSQL 15 cluster of this module's own (``max_connections = 100``),
so the connections counted are the fleet's alone and a template built is one the fleet built.
Other machines are simulated for real on this one, with no hook in the product: a host name of
their own (a UTS namespace), another OS user, a cache folder of their own and a pid namespace
each, so that their pids collide. Everything goes over loopback.
"""

from __future__ import annotations

import collections
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from helpers import PYTEST_COMMAND, UNMOCKED_COMMAND, as_root, pid_file_of, write_files
from unmocked import ownership
from unmocked.session_names import IS_OWN_SESSION, SessionName

DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")
MAX_CONNECTIONS = 100
OWNER_ROLE = "fleet_owner"
# A run of the fleet that has not ended by then has hung: it fails with every run's output.
RUN_TIMEOUT = 180.0
CROWDED = ("too many clients", "remaining connection slots")

pytestmark = [
    as_root,
    pytest.mark.skipif(
        not (DEBIAN_15 / "initdb").is_file(), reason=f"no {DEBIAN_15}/initdb to start a cluster"
    ),
]


# -- the server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetServer:
    """The module's cluster: its superuser URL, that of the CREATEDB-only role, its log."""

    port: int
    log: Path

    def url(self, role: str = "postgres") -> str:
        return f"postgresql://{role}@127.0.0.1:{self.port}/postgres"


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def reachable_folder(prefix: str) -> Path:
    """A new folder every account may pass through (tmp_path's parents are root's, 0700)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    folder.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def fleet_server() -> Iterator[FleetServer]:
    """A PostgreSQL 15 of the account ``nobody`` on a free loopback port, trust auth, fsync off,
    with the login role ``fleet_owner`` (CREATEDB, no superuser), as a managed service gives."""
    home = reachable_folder("unmocked-fleet-")
    nobody = pwd.getpwnam("nobody")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    data, log = home / "data", home / "server.log"
    subprocess.run(
        [
            str(DEBIAN_15 / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        user="nobody",
        group="nogroup",
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        capture_output=True,
        check=True,
        timeout=120,
    )
    port = free_loopback_port()
    settings = {
        "port": port,
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": home,
        "max_connections": MAX_CONNECTIONS,
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    flags = [part for key, value in settings.items() for part in ("-c", f"{key}={value}")]
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [str(DEBIAN_15 / "postgres"), "-D", str(data), *flags],
            user="nobody",
            group="nogroup",
            extra_groups=[],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "ready" not in pid_file_of(data):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        made = FleetServer(port, log)
        with psycopg.connect(made.url(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER").format(
                    sql.Identifier(OWNER_ROLE)
                )
            )
        yield made
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)


class ConnectionWatch:
    """Counts the server's client sessions from outside, every 20 ms, while a fleet runs."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.peak = 0
        self.peak_own = 0

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    f"SELECT count(*), count(*) FILTER (WHERE {IS_OWN_SESSION}) "
                    "FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ).fetchone()
                assert row is not None
                self.peak = max(self.peak, int(row[0]))
                self.peak_own = max(self.peak_own, int(row[1]))
                time.sleep(0.02)


# -- the runs ------------------------------------------------------------------------------------


def migrations_sql(variant: str) -> str:
    """The migrations of one set: ``shared`` for six runs; any other name is other SQL (a table
    of its own, other seed rows), so another fingerprint."""
    schema = "CREATE TABLE marks (id serial PRIMARY KEY, run text NOT NULL, test text NOT NULL);\n"
    if variant != "shared":
        schema += f"CREATE TABLE only_in_{variant} (id int PRIMARY KEY);\n"
    return schema + f"INSERT INTO marks (run, test) VALUES {seed_values(variant)};\n"


def seed_rows(variant: str) -> list[tuple[str, str]]:
    return [(f"seed-{variant}", "one"), (f"seed-{variant}", "two")]


def seed_values(variant: str) -> str:
    return ", ".join(f"('{run}', '{test}')" for run, test in seed_rows(variant))


PROJECT_CONFTEST = """
import os, socket, time
from pathlib import Path

import psycopg

RUN = os.environ["FLEET_RUN"]
SEED = sorted(tuple(row) for row in {seed!r})


def rows(conn):
    return sorted(tuple(row) for row in conn.execute("SELECT run, test FROM marks").fetchall())


def mark_and_look(conn, test):
    '''Write this run's marker, commit, and see the template's seed rows and it alone.'''
    conn.execute("INSERT INTO marks (run, test) VALUES (%s, %s)", (RUN, test))
    conn.commit()
    assert rows(conn) == sorted([*SEED, (RUN, test)])


def hold_until_released(databases):
    '''Say where this test is (pid, host, databases), then wait for the outer test's word.'''
    signals = Path(os.environ["FLEET_SIGNALS"])
    (signals / f"{{RUN}}.started.partial").write_text(
        f"{{os.getpid()}} {{socket.gethostname()}} {{' '.join(databases)}}"
    )
    (signals / f"{{RUN}}.started.partial").rename(signals / f"{{RUN}}.started")
    deadline = time.monotonic() + 120
    while not (signals / f"{{RUN}}.release").exists():
        assert time.monotonic() < deadline, "never released"
        time.sleep(0.05)
"""

PROJECT_TESTS = """
import psycopg
from conftest import mark_and_look


def test_pg_{k}(pg):
    mark_and_look(pg, "pg_{k}")


def test_pg_url_{k}(pg_url):
    with psycopg.connect(pg_url) as conn:
        mark_and_look(conn, "pg_url_{k}")
"""

SA_SESSION_TEST = """
from sqlalchemy import text
from conftest import RUN, SEED


def test_sa_session(sa_session):
    sa_session.execute(text("INSERT INTO marks (run, test) VALUES (:run, 'sa')"), {"run": RUN})
    sa_session.commit()
    seen = sorted(tuple(row) for row in sa_session.execute(text("SELECT run, test FROM marks")))
    assert seen == sorted([*SEED, (RUN, "sa")])
"""

HELD_TEST = """
import psycopg
from conftest import RUN, SEED, hold_until_released, mark_and_look, rows


def test_held_open(pg, pg_url):
    mark_and_look(pg, "pg")
    with psycopg.connect(pg_url) as conn:
        mark_and_look(conn, "pg_url")
        name = conn.execute("SELECT current_database()").fetchone()[0]
        hold_until_released([pg.execute("SELECT current_database()").fetchone()[0], name])
        assert rows(conn) == sorted([*SEED, (RUN, "pg_url")])  # its database survived
    assert rows(pg) == sorted([*SEED, (RUN, "pg")])
"""


@dataclass
class Run:
    """One pytest run of the fleet: its own project folder, migrations set and output."""

    name: str
    folder: Path
    variant: str
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    output_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.output_path = self.folder / "output.txt"

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def templates(self, how: str) -> list[str]:
        """The template fingerprints (6 digits) this run says it ``built`` or ``reused``."""
        return re.findall(rf"template ([0-9a-f]{{6}}) {how}", self.output)


def make_project(folder: Path, variant: str, tests: Mapping[str, str]) -> None:
    """A user's project in ``folder``: the migrations of ``variant``, ``tests`` by file name."""
    write_files(
        folder,
        {
            "pytest.ini": "[pytest]\nunmocked_migrations = migrations\n",
            "migrations/001_marks.sql": migrations_sql(variant),
            "conftest.py": PROJECT_CONFTEST.format(seed=seed_rows(variant)),
            **tests,
        },
    )


def run_env(url: str, cache: Path, run: str, signals: Path | None = None) -> dict[str, str]:
    """A run's whole environment: this one's without outer pytest, libpq or unmocked variables,
    the server by URL, a cache folder, the run's marker (and where to signal, for held runs)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UNMOCKED_", "PG", "PYTEST_", "DJANGO_")) and key != "DATABASE_URL"
    }
    env.update(
        UNMOCKED_PROVIDER="url",
        UNMOCKED_DATABASE_URL=url,
        UNMOCKED_CACHE_DIR=str(cache),
        HOME=str(cache),
        FLEET_RUN=run,
    )
    if signals is not None:
        env["FLEET_SIGNALS"] = str(signals)
    return env


def start(run: Run, argv: Sequence[str], env: Mapping[str, str]) -> None:
    with run.output_path.open("wb") as out:
        run.process = subprocess.Popen(
            list(argv),
            cwd=run.folder,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a SIGKILL reaches all of it
        )


def pytest_argv(run: Run) -> list[str]:
    return [*PYTEST_COMMAND, "-p", "no:cacheprovider", "-p", "no:randomly", "-rA", *run.args]


def wait_for(runs: Sequence[Run], seconds: float = RUN_TIMEOUT) -> None:
    """Wait for every run to end; past ``seconds`` kill them all and fail with their output."""
    deadline = time.monotonic() + seconds
    for run in runs:
        assert run.process is not None
        try:
            run.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in runs:
                kill(other)
            pytest.fail(f"the run {run.name} did not end within {seconds:.0f} s\n{outputs(runs)}")


def kill(run: Run) -> None:
    """SIGKILL the whole of ``run`` (its process group: unshare, the pid namespace, pytest)."""
    if run.process is not None and run.process.poll() is None:
        os.killpg(run.process.pid, signal.SIGKILL)
        run.process.wait(30)


def outputs(runs: Sequence[Run]) -> str:
    return "\n".join(f"===== {run.name} =====\n{run.output}" for run in runs)


def assert_passed(runs: Sequence[Run]) -> None:
    failed = [run for run in runs if run.process is None or run.process.returncode != 0]
    assert not failed, f"runs that failed: {[run.name for run in failed]}\n{outputs(failed)}"


# -- 1. eight runs at once -----------------------------------------------------------------------

FLEET = (
    # name, migrations, pytest args
    ("shared-1", "shared", ("-n", "2")),
    ("shared-2", "shared", ("-n", "2")),
    ("shared-3", "shared", ("-n", "2")),
    ("shared-4", "shared", ()),
    ("shared-5", "shared", ()),
    ("shared-6", "shared", ()),
    ("other-a", "othera", ("-n", "2")),
    ("other-b", "otherb", ()),
)
TESTS_PER_KIND = 3


@pytest.mark.parametrize("role", ["postgres", OWNER_ROLE])
def test_eight_runs_share_one_server_each_template_built_once(
    fleet_server: FleetServer, tmp_path: Path, role: str
) -> None:
    url = fleet_server.url(role)
    runs = []
    for number, (name, variant, args) in enumerate(FLEET):
        folder = tmp_path / name
        tests = {
            f"test_{kind}.py": PROJECT_TESTS.format(k=f"{kind}") for kind in range(TESTS_PER_KIND)
        }
        if number == 0:
            tests["test_sa.py"] = SA_SESSION_TEST
        make_project(folder, variant, tests)
        runs.append(Run(name, folder, variant, args))
    before = databases_of(fleet_server, role)  # the other test's, when it ran first
    started = time.monotonic()
    with ConnectionWatch(fleet_server.url()) as watch:
        for run in runs:
            cache = run.folder / "cache"
            cache.mkdir()
            start(run, pytest_argv(run), run_env(url, cache, f"{role}-{run.name}"))
        wait_for(runs)
    seconds = time.monotonic() - started
    fresh = [re.findall(r"\((\d+) reset, (\d+) cloned\)", run.output)[-1:] for run in runs]
    reset, cloned = (sum(int(found[0][part]) for found in fresh if found) for part in (0, 1))
    print(
        f"\nfleet as {role}: {len(runs)} runs in {seconds:.1f} s, peak {watch.peak} client "
        f"sessions ({watch.peak_own} unmocked's own) of max_connections {MAX_CONNECTIONS}; "
        f"pg_url databases {reset} reset, {cloned} cloned"
    )

    assert_passed(runs)
    crowded = [run.name for run in runs if any(words in run.output for words in CROWDED)]
    assert not crowded, f"runs out of connections: {crowded}\n{outputs(runs)}"
    # The other runs' databases are theirs: no test is told that they appeared while it ran.
    blamed = [run.name for run in runs if "appeared on the server" in run.output]
    assert not blamed, f"runs warned of others' databases: {blamed}\n{outputs(runs)}"
    assert watch.peak < MAX_CONNECTIONS
    server_log = fleet_server.log.read_text(errors="replace")
    assert not any(words in server_log for words in CROWDED), server_log[-3000:]
    # One fingerprint per migrations set, every run of a set on it, and each built exactly once
    # in the whole fleet: the others waited for that build and reused it.
    by_variant: dict[str, set[str]] = collections.defaultdict(set)
    builds: collections.Counter[str] = collections.Counter()
    for run in runs:
        by_variant[run.variant].update(run.templates("built in") + run.templates("reused"))
        builds.update(set(run.templates("built in")))  # the header's and the summary's
    assert all(len(found) == 1 for found in by_variant.values()), (by_variant, outputs(runs))
    fingerprints = {found.pop() for found in by_variant.values()}
    assert len(fingerprints) == 3
    assert builds == dict.fromkeys(fingerprints, 1), outputs(runs)
    left = databases_of(fleet_server, role) - before
    # Only templates are left, every run dropped its own databases at its end: one per set, and
    # one per set for pg_url's reset machinery (built by the same lock, :mod:`unmocked.fresh`).
    assert [is_template for _, is_template in left] == [True] * 6, left
    assert fingerprints <= {name[len("unmocked_tpl_") :][:6] for name, _ in left}, left


def databases_of(server: FleetServer, role: str) -> set[tuple[str, bool]]:
    """The ``unmocked_*`` databases ``role`` owns on ``server``, each with whether a template."""
    with psycopg.connect(server.url(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT datname, datistemplate FROM pg_database "
            "WHERE datname LIKE 'unmocked\\_%%' AND pg_get_userbyid(datdba) = %s",
            (role,),
        ).fetchall()
    return {(str(name), bool(is_template)) for name, is_template in rows}


# -- 2. runs on other machines -------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """A machine simulated on this one: a host name (UTS namespace), an OS user, a cache folder,
    and a pid namespace of its own per command."""

    name: str
    user: str
    cache: Path

    def argv(self, command: Sequence[str]) -> list[str]:
        account = pwd.getpwnam(self.user)
        become = []
        if account.pw_uid != 0:
            # The interpreter lives under /root (0700): the other user may pass through folders
            # (CAP_DAC_READ_SEARCH) and is otherwise an ordinary account.
            become = [
                "setpriv",
                f"--reuid={account.pw_uid}",
                f"--regid={account.pw_gid}",
                "--clear-groups",
                "--inh-caps=+dac_read_search",
                "--ambient-caps=+dac_read_search",
            ]
        inner = " ".join(map(quote, [*become, *command]))
        return [
            "unshare",
            "--uts",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            f"hostname {quote(self.name)} && exec {inner}",
        ]


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.fixture(scope="module")
def throwaway_user() -> Iterator[str]:
    """An OS user made for this module, removed afterwards; skipped, with what failed, where
    namespaces, ``setpriv``'s ambient capabilities or ``useradd`` cannot be had."""
    missing = [
        tool for tool in ("unshare", "setpriv", "useradd", "userdel") if not shutil.which(tool)
    ]
    if missing:
        pytest.skip(f"cannot simulate another host here: no {', '.join(missing)} on PATH")
    probe = Host("fleet-probe", "nobody", Path("/"))
    tried = subprocess.run(
        probe.argv(["true"]), capture_output=True, text=True, timeout=60, check=False
    )
    if tried.returncode != 0:
        pytest.skip(
            f"cannot simulate another host here: {' '.join(probe.argv(['true']))}: "
            f"{tried.stderr.strip()}"
        )
    name = f"unmfleet{secrets.token_hex(3)}"
    made = subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"useradd {name} failed: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


def host(name: str, user: str, folder: Path) -> Host:
    account = pwd.getpwnam(user)
    cache = folder / f"cache-{name}"
    cache.mkdir()
    os.chown(cache, account.pw_uid, account.pw_gid)
    return Host(name, user, cache)


def wait_until(found: Path, runs: Sequence[Run], seconds: float = 60) -> str:
    """The text of ``found`` once a run writes it; fails with the runs' output if none does."""
    deadline = time.monotonic() + seconds
    while not found.exists():
        if time.monotonic() > deadline or any(
            run.process is not None and run.process.poll() is not None for run in runs
        ):
            for run in runs:
                kill(run)
            pytest.fail(f"{found.name} never came\n{outputs(runs)}")
        time.sleep(0.05)
    return found.read_text()


def existing(url: str, names: Sequence[str]) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (list(names),)
        ).fetchall()
    return {str(row[0]) for row in rows}


def wait_for_sessions_gone(url: str, run: str, seconds: float = 20) -> None:
    """Until the server has noticed that a killed run's sessions are gone, its lease with them:
    those named for the run (session_names) and those on its databases."""
    deadline = time.monotonic() + seconds
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute(
            "SELECT FROM pg_stat_activity WHERE application_name LIKE %s OR datname LIKE %s",
            (f"unmocked {run} %", f"unmocked\\_{run}\\_%"),
        ).fetchone():
            assert time.monotonic() < deadline, f"the killed run {run}'s sessions stay"
            time.sleep(0.05)


def run_ids(databases: str) -> set[str]:
    return {found[0] for name in databases.split() if (found := ownership.run_in_name(name))}


def test_runs_on_other_hosts_are_respected_alive_and_collected_dead(
    fleet_server: FleetServer, throwaway_user: str
) -> None:
    """(a) a live run on host B is never collected by a run or ``unmocked gc`` on host A;
    (b) runs on host B killed mid-test are collected by the next run on host A and by
    ``unmocked gc`` on host C; (c) every command runs as pid 1 of its own pid namespace, so
    every pid collides, and nothing is mistaken for another."""
    url = fleet_server.url()
    folder = reachable_folder("unmocked-fleet-hosts-")
    # Migrations of their own: the fleet's templates are the fleet's to build, whichever test of
    # the module runs first.
    held = [Run(name, folder / name, "hosts") for name in ("live", "killed-1", "killed-2")]
    run_a = Run("host-a", folder / "host-a", "hosts")
    try:
        account = pwd.getpwnam(throwaway_user)
        signals = folder / "signals"
        signals.mkdir()
        os.chown(signals, account.pw_uid, account.pw_gid)
        host_a = host("fleet-a", "root", folder)
        host_b = host("fleet-b", throwaway_user, folder)
        host_c = host("fleet-c", "nobody", folder)

        for run in held:
            make_project(run.folder, run.variant, {"test_held.py": HELD_TEST})
            os.chown(run.folder, account.pw_uid, account.pw_gid)
            start(run, host_b.argv(pytest_argv(run)), run_env(url, host_b.cache, run.name, signals))
        where = {
            run.name: wait_until(signals / f"{run.name}.started", held).split() for run in held
        }
        live, killed_1, killed_2 = held
        databases = {name: found[2:] for name, found in where.items()}
        assert {found[0] for found in where.values()} == {"1"}, where  # every pid collides
        assert {found[1] for found in where.values()} == {"fleet-b"}, where
        own_ids = {name: run_ids(" ".join(found)) for name, found in databases.items()}
        assert all(len(ids) == 1 for ids in own_ids.values()), databases
        # The server sees the live run as B's: its lease's session names it, pid 1 included.
        (live_id,) = own_ids["live"]
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
                (f"unmocked {live_id} %",),
            ).fetchone()
        assert row is not None
        assert SessionName.parse(str(row[0])) == SessionName(live_id, 1, throwaway_user, "fleet-b")

        kill(killed_1)
        wait_for_sessions_gone(url, own_ids["killed-1"].pop())
        make_project(run_a.folder, "hosts", {"test_a.py": PROJECT_TESTS.format(k="a")})
        start(run_a, host_a.argv(pytest_argv(run_a)), run_env(url, host_a.cache, "host-a"))
        wait_for([run_a])
        assert_passed([run_a])
        assert not existing(url, databases["killed-1"]), "host A's run left the dead run's"
        assert existing(url, databases["live"]) == set(databases["live"]), run_a.output
        gc_a = run_gc(host_a, url)
        assert existing(url, databases["live"]) == set(databases["live"]), gc_a
        assert existing(url, databases["killed-2"]) == set(databases["killed-2"]), "not yet dead"

        kill(killed_2)
        wait_for_sessions_gone(url, own_ids["killed-2"].pop())
        gc_c = run_gc(host_c, url)
        assert not existing(url, databases["killed-2"]), gc_c
        assert all(name in gc_c for name in databases["killed-2"]), gc_c
        assert existing(url, databases["live"]) == set(databases["live"]), gc_c

        (signals / "live.release").touch()
        wait_for([live])
        assert_passed([live])
        assert "1 passed" in live.output, live.output
        assert not existing(url, databases["live"])  # gone with its own run's end
    finally:
        for run in [*held, run_a]:
            kill(run)  # a failed assertion must not leave runs waiting on their files
        shutil.rmtree(folder, ignore_errors=True)


def run_gc(on: Host, url: str) -> str:
    """``unmocked gc`` on host ``on``; its output (it must succeed)."""
    env = run_env(url, on.cache, "gc")
    done = subprocess.run(
        on.argv([*UNMOCKED_COMMAND, "gc"]),
        env=env,
        cwd=on.cache,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr
