"""The Django integration works with every pytest-django release people pin, 4.5 to the newest.

Here the example shop's own suite runs under whichever pytest-django this environment has: the
main job has the newest, and CI runs these modules again in an environment of their own with the
oldest supported release (4.5.2). No private name of pytest-django is imported: a private function
moved or missing in one release made every database test of a suite pinned to it fail.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
from pathlib import Path

import pytest

from helpers import EACH_KIND_OF_SERVER, embedded_env, run_pytest

pytest.importorskip("pytest_django", reason="needs pytest-django")

PROVIDERS = EACH_KIND_OF_SERVER

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLE = REPOSITORY / "examples" / "django_app"


def test_the_django_example_passes_under_the_installed_pytest_django(
    provider: dict[str, str], tmp_path: Path
) -> None:
    project = shutil.copytree(EXAMPLE, tmp_path / "django_app")
    env = embedded_env(Path(provider["UNMOCKED_CACHE_DIR"]), **provider)
    result = run_pytest("-p", "randomly", "-p", "no:cacheprovider", env=env, cwd=project)
    output = result.stdout + result.stderr
    version = importlib.metadata.version("pytest-django")
    assert result.returncode == 0, f"pytest-django {version}:\n{output}"
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed[1]) >= 20, output
    assert re.search(r"unmocked: .*, \d+ rollback tests, \d+ fresh databases", output), output


def test_unmocked_imports_no_private_name_of_pytest_django() -> None:
    private = []
    for path in sorted((REPOSITORY / "src" / "unmocked").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_django"):
                names = [str(node.module), *(alias.name for alias in node.names)]
                parts = [part for name in names for part in name.split(".")]
                if any(part.startswith("_") for part in parts):
                    private.append(f"{path.relative_to(REPOSITORY)}:{node.lineno}")
    assert not private
