"""unmocked_provider = docker on a real engine: a container per run, tuned, shared by xdist workers,
removed after the run, and what a killed run left collected by ``unmocked gc``, never a
container unmocked did not start.

Skipped, with the reason, where the Docker SDK is not installed or no engine answers (CI starts
one with ``.ci/docker-engine``, which builds ``postgres:15`` and ``postgis/postgis:15-3.3`` from
Debian's packages: no registry answers there). Never a fake engine.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import PYTEST_COMMAND, embedded_env, run_pytest, run_unmocked, write_files
from unmocked import servers
from unmocked.errors import ServerError
from unmocked.servers import containers
from unmocked.settings import Settings


@pytest.fixture(scope="module")
def engine() -> Any:
    try:
        return containers.engine()
    except containers.Unavailable as error:
        pytest.skip(f"the docker provider cannot be tested here: {error}")


@pytest.fixture
def ours(engine: Any) -> Iterator[None]:
    """The engine's unmocked containers to this test alone (other xdist workers' docker tests wait:
    a run's start removes what dead runs left, which the gc test wants ``unmocked gc`` to find);
    after it, whatever its killed runs left is removed."""
    with open(Path(tempfile.gettempdir()) / "unmocked-test-docker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
        containers.collect_abandoned(engine)


def _publishing(engine: Any, port: str) -> list[str]:
    """unmocked's containers that publish ``port``: the one a run used, while it exists."""
    return [
        container.name
        for container in engine.containers.list(all=True, filters={"label": containers.OWNER})
        if any(bound.get("HostPort") == port for bound in (container.ports.get("5432/tcp") or []))
    ]


def _project(folder: Path, ini: str, tests: str) -> Path:
    return write_files(
        folder,
        {
            "pytest.ini": (
                "[pytest]\nunmocked_provider = docker\nunmocked_migrations = migrations\n"
                f"asyncio_default_fixture_loop_scope = function\n{ini}"
            ),
            "migrations/001.sql": "CREATE TABLE notes (id serial PRIMARY KEY, body text);\n",
            "test_app.py": tests,
        },
    )


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = embedded_env(tmp_path / "cache", **extra)
    del env["UNMOCKED_PROVIDER"]  # the project's pytest.ini says docker
    return env


ON_DOCKER = """
import os
from urllib.parse import urlsplit

import psycopg
import pytest

@pytest.mark.parametrize("n", range(4))
def test_pg(pg, pg_server, n):
    pg.execute("INSERT INTO notes (body) VALUES ('a')")
    assert pg.execute("SELECT count(*) FROM notes").fetchone()[0] == 1
    assert pg.execute("SHOW fsync").fetchone()[0] == "off"
    assert pg.execute("SHOW full_page_writes").fetchone()[0] == "off"
    assert pg_server.provider == "docker" and pg_server.image == "postgres:15"
    port = urlsplit(str(pg_server.url)).port
    with open(os.path.join(os.environ["PORTS"], f"{os.getpid()}-{n}"), "w") as out:
        out.write(str(port))

def test_pg_url(pg_url):
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 0
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("15")
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_a_run_gets_postgres_15_in_one_container_removed_after_the_run(
    engine: Any, ours: None, tmp_path: Path, workers: list[str]
) -> None:
    project = _project(tmp_path / "project", "unmocked_pg_version = 15\n", ON_DOCKER)
    ports = tmp_path / "ports"
    ports.mkdir()
    env = _env(tmp_path, PORTS=str(ports))
    run = run_pytest("-p", "no:randomly", *workers, cwd=project, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PostgreSQL 15." in run.stdout and "(docker postgres:15)" in run.stdout, run.stdout
    seen = {path.read_text() for path in ports.iterdir()}
    assert len(list(ports.iterdir())) == 4, run.stdout
    assert len(seen) == 1, "the workers did not share one server"
    assert not _publishing(engine, seen.pop()), "the run's container outlived it"


def test_a_postgis_image_serves_unmocked_extensions_postgis(
    engine: Any, ours: None, tmp_path: Path
) -> None:
    project = _project(
        tmp_path / "project",
        "unmocked_image = postgis/postgis:15-3.3\nunmocked_extensions = postgis\n",
        """
        import os
        from urllib.parse import urlsplit

        def test_postgis(pg, pg_server):
            with open(os.environ["PORT"], "w") as out:
                out.write(str(urlsplit(str(pg_server.url)).port))
            distance = pg.execute(
                "SELECT ST_Distance('POINT(0 0)'::geometry, 'POINT(3 4)'::geometry)"
            ).fetchone()[0]
            assert distance == 5
        """,
    )
    port = tmp_path / "port"
    run = run_pytest(cwd=project, env=_env(tmp_path, PORT=str(port)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(docker postgis/postgis:15-3.3)" in run.stdout, run.stdout
    assert not _publishing(engine, port.read_text()), "the run's container outlived it"


KILLED = """
import os, time

def test_waits_to_be_killed(pg):
    open(os.environ["STARTED"], "w").close()
    time.sleep(120)
"""


def test_gc_removes_a_killed_runs_container_and_leaves_one_unmocked_did_not_start(
    engine: Any, ours: None, tmp_path: Path
) -> None:
    project = _project(tmp_path / "project", "unmocked_pg_version = 15\n", KILLED)
    started = tmp_path / "started"
    stranger = engine.containers.run(
        "postgres:15",
        name=f"h_docker_stranger_{os.getpid()}",
        environment={"POSTGRES_PASSWORD": "stranger"},
        detach=True,
    )
    try:
        run = subprocess.Popen(
            [*PYTEST_COMMAND, "-q", "-p", "no:randomly"],
            cwd=project,
            env=_env(tmp_path, STARTED=str(started)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 90
        while not started.exists():
            assert run.poll() is None and time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        filters = {"label": f"{containers.PID}={run.pid}"}
        (left,) = engine.containers.list(all=True, filters=filters)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        assert engine.containers.list(all=True, filters=filters), "the killed run's container went"

        gc = run_unmocked("gc", cwd=tmp_path, env=embedded_env(tmp_path / "cache"))
        assert gc.returncode == 0, gc.stdout + gc.stderr
        assert f"removed container {left.name} (from postgres:15): " in gc.stdout, gc.stdout
        assert f"pid {run.pid}) no longer runs" in gc.stdout
        assert not engine.containers.list(all=True, filters=filters)
        stranger.reload()
        assert stranger.status == "running", "gc touched a container unmocked did not start"
    finally:
        stranger.remove(force=True)


def test_a_major_the_engine_lacks_is_one_paragraph_not_a_hang(
    engine: Any, ours: None, tmp_path: Path
) -> None:
    if any("postgres:17" in image.tags for image in engine.images.list()):
        pytest.skip("this engine has postgres:17")
    project = _project(
        tmp_path / "project", "unmocked_pg_version = 17\n", "def test_pg(pg):\n    pass\n"
    )
    began = time.monotonic()
    run = run_pytest(cwd=project, env=_env(tmp_path), timeout=containers.PULL_TIMEOUT + 60)
    assert run.returncode != 0
    assert (
        "unmocked_provider = docker, but the Docker engine at " in run.stdout
        and "has no image postgres:17, and pulling it " in run.stdout
        and "set unmocked_image to an image the engine has (" in run.stdout
    ), run.stdout
    assert "postgres:15" in run.stdout, "the paragraph names the images there are"
    assert time.monotonic() - began < containers.PULL_TIMEOUT + 30
    listed = engine.containers.list(all=True, filters={"label": containers.OWNER})
    assert not [each for each in listed if each.attrs["Config"]["Image"] == "postgres:17"]


def test_auto_tries_docker_last_and_says_why_it_could_not_serve(
    engine: Any, tmp_path: Path
) -> None:
    settings = Settings(provider="auto", pg_version=17, cache_dir=tmp_path / "cache")
    with pytest.raises(ServerError) as raised:
        servers.start(settings).close()
    assert "Docker: the Docker engine at " in str(raised.value)
    assert "has no image postgres:17" in str(raised.value)


def test_docker_without_the_sdk_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # import docker: ImportError
    with pytest.raises(ServerError) as raised:
        servers.start(Settings(provider="docker", cache_dir=tmp_path / "cache"))
    assert str(raised.value) == (
        "unmocked_provider = docker, but the Docker SDK for Python is not installed "
        "(pip install 'unmocked[docker]')."
    )


def _up_env(tmp_path: Path) -> dict[str, str]:
    """The environment of ``unmocked up`` for the runs of :func:`_project` with postgres:15."""
    return embedded_env(tmp_path / "cache", UNMOCKED_PROVIDER="docker", UNMOCKED_PG_VERSION="15")


def _detached(engine: Any, tmp_path: Path) -> list[Any]:
    """The containers ``unmocked up`` started for this test's cache folder."""
    record = f"{containers.RECORD}={(tmp_path / 'cache').resolve()}"
    return list(engine.containers.list(all=True, filters={"label": record}))


@pytest.fixture
def up_folder(engine: Any, ours: None, tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, whose cache folder's ``unmocked up`` container is removed after the test."""
    try:
        yield tmp_path
    finally:
        run_unmocked("down", cwd=tmp_path, env=_up_env(tmp_path))
        for left in _detached(engine, tmp_path):
            left.remove(force=True)


def test_unmocked_up_keeps_a_container_that_runs_attach_to_gc_keeps_and_down_removes(
    engine: Any, up_folder: Path
) -> None:
    tmp_path = up_folder
    began = time.monotonic()
    up = run_unmocked("up", cwd=tmp_path, env=_up_env(tmp_path))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "unmocked up: started PostgreSQL 15." in up.stdout, up.stdout
    assert "(docker postgres:15, unmocked up)" in up.stdout, up.stdout
    up_seconds = time.monotonic() - began
    (container,) = _detached(engine, tmp_path)
    assert container.labels[containers.DETACHED] == "1"
    assert container.status == "running", "the container did not outlive `unmocked up`"

    project = _project(tmp_path / "project", "unmocked_pg_version = 15\n", ON_DOCKER)
    ports = tmp_path / "ports"
    ports.mkdir()
    began = time.monotonic()
    run = run_pytest("-p", "no:randomly", cwd=project, env=_env(tmp_path, PORTS=str(ports)))
    run_seconds = time.monotonic() - began
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(docker postgres:15, unmocked up)" in run.stdout, run.stdout
    published = container.ports["5432/tcp"][0]["HostPort"]
    assert {path.read_text() for path in ports.iterdir()} == {published}
    container.reload()
    assert container.status == "running", "the run removed the `unmocked up` container"

    status = run_unmocked("status", cwd=tmp_path, env=_up_env(tmp_path))
    assert status.returncode == 0, status.stdout + status.stderr
    assert "provider:   docker" in status.stdout
    assert f"container:  {container.id[:12]} (image postgres:15" in status.stdout, status.stdout
    assert "runs attach: yes" in status.stdout, status.stdout

    gc = run_unmocked("gc", cwd=tmp_path, env=_up_env(tmp_path))
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert container.name not in gc.stdout, gc.stdout
    container.reload()
    assert container.status == "running", "gc removed the container `unmocked up` recorded"

    down = run_unmocked("down", cwd=tmp_path, env=_up_env(tmp_path))
    assert down.returncode == 0, down.stdout + down.stderr
    assert "unmocked down: removed PostgreSQL 15." in down.stdout, down.stdout
    assert not _detached(engine, tmp_path), "`unmocked down` left the container"
    assert not (tmp_path / "cache" / "server.json").exists()
    print(f"up {up_seconds:.1f} s, attached run {run_seconds:.1f} s")


def test_a_detached_container_whose_record_is_gone_is_collected_by_gc(
    engine: Any, up_folder: Path
) -> None:
    tmp_path = up_folder
    said = ""
    # Any collector of this account may take the container once its record is gone: a run's
    # start or gc in the other xdist worker, between the unlink and our gc. Then up again.
    for _ in range(3):
        up = run_unmocked("up", cwd=tmp_path, env=_up_env(tmp_path))
        assert up.returncode == 0, up.stdout + up.stderr
        (container,) = _detached(engine, tmp_path)
        (tmp_path / "cache" / "server.json").unlink()

        gc = run_unmocked("gc", cwd=tmp_path, env=_up_env(tmp_path))
        assert gc.returncode == 0, gc.stdout + gc.stderr
        assert not _detached(engine, tmp_path), gc.stdout
        said = gc.stdout
        if container.name in said:
            break
    assert (
        f"removed container {container.name} (from postgres:15): `unmocked up` started it and no "
        "record names it now" in said
    ), said


def test_a_run_of_another_image_does_not_attach_to_the_up_container(
    engine: Any, up_folder: Path
) -> None:
    tmp_path = up_folder
    up = run_unmocked("up", cwd=tmp_path, env=_up_env(tmp_path))
    assert up.returncode == 0, up.stdout + up.stderr
    project = _project(
        tmp_path / "project",
        "unmocked_image = postgis/postgis:15-3.3\n",
        "def test_pg(pg_server):\n    assert pg_server.image == 'postgis/postgis:15-3.3'\n",
    )
    run = run_pytest(cwd=project, env=_env(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(docker postgis/postgis:15-3.3)" in run.stdout, run.stdout
    (container,) = _detached(engine, tmp_path)
    assert container.status == "running", "the run's start collected the recorded container"
