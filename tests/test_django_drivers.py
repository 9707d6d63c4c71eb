"""Django's driver under unmocked: psycopg2 when a project asks, and said when unmocked changed it.

Django's PostgreSQL backend takes psycopg 3 whenever it can import it, and unmocked requires
psycopg 3; so a project on psycopg2 would silently run its tests on another driver. The header says
so when that happens, and ``use_psycopg2()`` in the test settings keeps Django on psycopg2. The
example shop's own suite (locks, threads, a live server) runs on psycopg2 to show that every
fixture works there. Tests that need psycopg2 installed skip without it.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from helpers import EACH_KIND_OF_SERVER, embedded_env, run_pytest, write_files
from unmocked.errors import ConfigurationError
from unmocked.integrations.django import requirers_of_psycopg, use_psycopg2

pytest.importorskip("pytest_django", reason="needs pytest-django")

PROVIDERS = EACH_KIND_OF_SERVER

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "django_app"
NOTE = "unmocked: Django runs on psycopg 3 here, not on the psycopg2 this project installed"

# Django's driver, as each kind of test sees it.
DRIVER_TESTS = """
import pytest
from django.db import connection


def driver():
    with connection.cursor():
        return type(connection.connection).__module__.split(".")[0]


def test_rollback(db):
    assert driver() == "psycopg2"


@pytest.mark.django_db(transaction=True)
def test_transactional():
    assert driver() == "psycopg2"
"""


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A copy of the example shop, which lists Django's PostgreSQL app among its apps (so the
    backend is imported while Django sets up, before any conftest.py)."""
    return shutil.copytree(EXAMPLE, tmp_path / "django_app")


def needs_psycopg2() -> None:
    pytest.importorskip("psycopg2", reason="needs psycopg2 (pip install psycopg2-binary)")


def psycopg_required_by_others() -> list[str]:
    return requirers_of_psycopg(importlib.metadata.distributions())


def test_the_example_runs_on_psycopg2_when_its_test_settings_ask(
    shop: Path, provider: dict[str, str]
) -> None:
    needs_psycopg2()
    write_files(
        shop,
        {
            "test_settings.py": """
            from unmocked.integrations.django import use_psycopg2

            use_psycopg2()

            from shop.settings import *  # noqa: E402, F403
            """,
            "tests/test_driver.py": DRIVER_TESTS,
        },
    )
    env = embedded_env(Path(provider["UNMOCKED_CACHE_DIR"]), **provider)
    result = run_pytest("--ds=test_settings", "-p", "no:cacheprovider", env=env, cwd=shop)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert " passed" in output and NOTE not in output, output


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_the_header_says_when_django_takes_psycopg3_only_because_of_unmocked(
    shop: Path, unmocked_cache: Path, workers: list[str]
) -> None:
    needs_psycopg2()
    others = psycopg_required_by_others()
    if others:
        pytest.skip(f"psycopg 3 is required here by {', '.join(others)} too, not only unmocked")
    env = embedded_env(unmocked_cache)
    result = run_pytest("-p", "no:cacheprovider", *workers, env=env, cwd=shop)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = output.splitlines()
    header = next(n for n, line in enumerate(lines) if line.startswith("unmocked: PostgreSQL"))
    note = [line for line in lines[header + 1 : header + 3] if line.startswith(NOTE)]
    assert note, output  # under the header, before the first test
    assert output.count(NOTE) == 1, output
    assert "use_psycopg2() at the top of the settings your tests use" in note[0]


def test_the_header_is_silent_when_the_environment_requires_psycopg3_anyway(
    shop: Path, unmocked_cache: Path
) -> None:
    """Then Django takes psycopg 3 without unmocked too: nothing changed, nothing to say."""
    needs_psycopg2()
    if not psycopg_required_by_others():
        pytest.skip("nothing but unmocked requires psycopg 3 here")
    result = run_pytest("-p", "no:cacheprovider", env=embedded_env(unmocked_cache), cwd=shop)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "unmocked: PostgreSQL" in output and NOTE not in output, output


def test_requirers_of_psycopg_are_what_requires_it_besides_unmocked(tmp_path: Path) -> None:
    requirements = {
        "shop": ["psycopg[binary]>=3.1"],
        "unmocked": ["psycopg[binary]>=3.2,<3.4"],
        "psycopg": ["psycopg-binary==3.2.1; implementation_name != 'pypy' and extra == 'binary'"],
        # Django requires psycopg only for its extra: installing Django does not install it.
        "Django": ['psycopg[binary]>=3.1.8; extra == "psycopg"', "asgiref>=3.8"],
        "legacy_tool": ["psycopg2-binary"],
        "Other.Tool": ["Psycopg >=3; python_version >= '3.8'"],
    }
    for name, required in requirements.items():
        lines = [f"Name: {name}", "Version: 1.0", *(f"Requires-Dist: {r}" for r in required)]
        write_files(tmp_path, {f"{name}-1.0.dist-info/METADATA": "\n".join(lines) + "\n"})
    found = requirers_of_psycopg(importlib.metadata.distributions(path=[str(tmp_path)]))
    assert found == ["other-tool", "shop"]


def test_use_psycopg2_once_django_took_psycopg3_says_it_came_too_late() -> None:
    import django.db.backends.postgresql.base as backend

    if backend.Database.__name__ != "psycopg":
        pytest.skip("Django's backend runs on psycopg2 in this process")
    with pytest.raises(ConfigurationError, match=r"use_psycopg2\(\) came too late: .* at the top"):
        use_psycopg2()
