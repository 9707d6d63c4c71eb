"""The plugin needs none of the frameworks it integrates with: without them, ``pg`` still works.

A small project runs under a real ``pytest`` subprocess in which SQLAlchemy, Django, Alembic,
asyncpg, SQLModel and factory_boy cannot be imported, as on a machine where they are not installed.
A ``sitecustomize.py`` on ``PYTHONPATH`` does that before anything else is imported: it puts a
``sys.meta_path`` finder first that answers ``ModuleNotFoundError`` for those packages and every
submodule of them. (Unlike a missing package, ``importlib.util.find_spec`` raises that error rather
than returning None.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import embedded_env, needs_embedded, outcomes, run_pytest, write_files

pytestmark = needs_embedded

# The optional frameworks, by top-level import name (factory_boy imports as ``factory``).
BLOCKED = ("sqlalchemy", "django", "alembic", "asyncpg", "sqlmodel", "factory", "docker")

SITECUSTOMIZE = f"""
import sys

BLOCKED = frozenset({BLOCKED!r})


class NotInstalled:
    \"\"\"Finds the blocked packages and their submodules missing, before any other finder.\"\"\"

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{fullname!r}}", name=fullname)
        return None


sys.meta_path.insert(0, NotInstalled())
"""

FILES = {
    "pytest.ini": "[pytest]\nunmocked_migrations = migrations\n",
    "migrations/001.sql": "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);\n",
    # Checked when pytest is done with everything, teardowns and the summary included.
    "conftest.py": f"""
        import os
        import sys

        BLOCKED = {BLOCKED!r}

        def pytest_unconfigure(config):
            imported = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
            with open(os.environ["IMPORTED_FILE"], "w") as out:
                out.write(" ".join(imported))
    """,
    "test_app.py": f"""
        import importlib
        import sys

        import pytest

        BLOCKED = {BLOCKED!r}

        def test_the_frameworks_cannot_be_imported_here():
            for name in BLOCKED:
                with pytest.raises(ModuleNotFoundError):
                    importlib.import_module(name)

        def test_pg_inserts_and_selects_a_row(pg):
            pg.execute("INSERT INTO notes (body) VALUES ('hello')")
            assert pg.execute("SELECT body FROM notes").fetchall() == [("hello",)]
            assert not any(name.split(".")[0] in BLOCKED for name in sys.modules)

        def test_sa_session_needs_sqlalchemy(sa_session):
            raise AssertionError("sa_session was given without SQLAlchemy")
    """,
}


# pytest-django is installed here for the Django tests. It does not itself require Django (Django is
# only its "django" extra), yet a project without Django would not have it: its plugin (entry point
# "django" in the pytest11 group, hence ``-p no:django``) is disabled as it would be absent there.
# The second case keeps it active, for a virtualenv that has pytest-django and no Django.
@pytest.mark.parametrize(
    "plugins",
    [["-p", "no:django"], []],
    ids=["without-pytest-django", "pytest-django-without-django"],
)
def test_the_plugin_loads_and_pg_works_without_any_optional_framework(
    tmp_path: Path, unmocked_cache: Path, plugins: list[str]
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    project = tmp_path / "project"
    write_files(project, FILES)
    env = embedded_env(
        unmocked_cache,
        PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        IMPORTED_FILE=str(tmp_path / "imported"),
    )
    report = tmp_path / "report.xml"

    result = run_pytest(*plugins, "-rs", f"--junitxml={report}", cwd=project, env=env, timeout=300)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    found = outcomes(report)
    assert {name: outcome for name, (outcome, _) in found.items()} == {
        "test_the_frameworks_cannot_be_imported_here": "passed",
        "test_pg_inserts_and_selects_a_row": "passed",
        "test_sa_session_needs_sqlalchemy": "skipped",
    }, output
    assert "SQLAlchemy" in found["test_sa_session_needs_sqlalchemy"][1], output
    assert (tmp_path / "imported").read_text() == "", output
