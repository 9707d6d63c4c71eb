"""docs/ci.md's recipes, run: every YAML block parses and has its CI's shape, and every shell
command in them runs on a small project against this checkout (as pgtestdb tests its README).

What is substituted, and what cannot run here, is said in docs/ci.md ("How these recipes are
tested") and in :data:`NOT_RUN`. The sample project is examples/quickstart (a ``pg`` test and a
``pg_url`` test), copied with a fingerprint of its own per recipe.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import unmocked
from helpers import RUNNING_SERVER_URL, a_role_of_its_own, outcomes, server_answers

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ci.md"
SAMPLE = ROOT / "examples" / "quickstart"
SAMPLE_TESTS = 6  # examples/quickstart/tests/test_bank.py

# What a recipe names that this machine cannot run, and why; a step or a job part not listed here
# fails the shape check, so every new one is thought about rather than silently skipped.
NOT_RUN = {
    "actions/checkout": "GitHub's own program, which only a runner runs (the project is here)",
    "actions/setup-python": "GitHub's own program; the checkout's venv is the job's Python",
    "actions/cache": "GitHub's own program; its cache service exists only on GitHub",
    "services": "no image registry is reachable: the machine's server at 127.0.0.1:5432 stands "
    "for the service container",
    "container": "no image registry is reachable: the job's commands run on this machine (as "
    "root on CI's machines, as the container's root would)",
    "image": "no image registry is reachable: the job's commands run on this machine",
}
# GitLab's top-level keywords that are not jobs.
GITLAB_GLOBALS = {"stages", "variables", "default", "workflow", "include", "image", "services"}
EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")
GITLAB_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass
class Job:
    """One CI job as this machine runs it: its commands, its environment, how many groups."""

    name: str
    commands: list[str]
    env: dict[str, str]
    groups: int = 1
    service_password: str | None = None  # POSTGRES_PASSWORD given to a postgres service
    service_hosts: list[str] = field(default_factory=list)  # names the service is reached by


@dataclass(frozen=True)
class Recipe:
    id: str
    platform: str  # "github" or "gitlab"
    text: str


def recipes() -> list[Recipe]:
    """Every ``yaml`` block of docs/ci.md, named by its section and its CI."""
    found: list[Recipe] = []
    section = ""
    for heading, language, text in re.findall(
        r"^## ([^\n]*)$|^```(\w+)\n(.*?)^```", DOC.read_text(), re.M | re.S
    ):
        if heading:
            section = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")[:32].strip("-")
        elif language == "yaml":
            platform = "github" if "jobs" in yaml.safe_load(text) else "gitlab"
            found.append(Recipe(f"{platform}-{section}", platform, text))
    return found


def bash_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", DOC.read_text(), re.M | re.S)


def github_jobs(workflow: dict[Any, Any], secrets_: Mapping[str, str]) -> list[Job]:
    """The workflow's jobs, its shape checked: ``on``, ``jobs.*.runs-on`` and ``steps``."""
    assert workflow.get("on", workflow.get(True)), (
        "a workflow needs `on:` (PyYAML reads it as True)"
    )
    jobs: list[Job] = []
    for name, job in workflow["jobs"].items():
        assert "runs-on" in job, f"job {name} has no runs-on"
        assert set(job) <= {"runs-on", "steps", "env", "strategy", *NOT_RUN}, (
            f"{name}: add to NOT_RUN"
        )
        steps = job["steps"]
        assert isinstance(steps, list) and steps, f"job {name} has no steps"
        commands: list[str] = []
        for step in steps:
            assert ("uses" in step) != ("run" in step), f"a step of {name} needs uses or run"
            if "uses" in step:
                assert step["uses"].partition("@")[0] in NOT_RUN, f"{step['uses']}: add to NOT_RUN"
            else:
                assert "env" not in step, "step env is not substituted by this test; use job env"
                commands.append(step["run"])
        groups = job.get("strategy", {}).get("matrix", {}).get("group", [1])
        assert groups == list(range(1, len(groups) + 1)), "pytest-split's groups count from 1"
        found = Job(name, commands, {k: str(v) for k, v in job.get("env", {}).items()}, len(groups))
        for service in job.get("services", {}).values():
            assert service["image"].startswith("postgres"), service
            assert "5432:5432" in service["ports"], "the job reaches the service at localhost:5432"
            found.service_password = _github_expand(
                service["env"]["POSTGRES_PASSWORD"], secrets_, None
            )
        jobs.append(found)
    return jobs


def gitlab_jobs(pipeline: dict[str, Any], variables: Mapping[str, str]) -> list[Job]:
    """The pipeline's jobs, its shape checked: every other top-level key is a job with a script."""
    jobs: list[Job] = []
    for name, job in pipeline.items():
        if name in GITLAB_GLOBALS or name.startswith("."):
            continue
        assert isinstance(job, dict) and isinstance(job.get("script"), list), f"{name}: no script"
        known = {"script", "before_script", "variables", "parallel", *NOT_RUN}
        assert set(job) <= known, f"{name}: {set(job) - known} is neither run nor in NOT_RUN"
        env = {**pipeline.get("variables", {}), **job.get("variables", {})}
        found = Job(
            name,
            [*job.get("before_script", []), *job["script"]],
            {k: _gitlab_expand(str(v), variables) for k, v in env.items()},
            int(job.get("parallel", 1)),
        )
        for service in job.get("services", []):
            image = service["name"] if isinstance(service, dict) else service
            assert image.startswith("postgres"), service
            found.service_hosts.append(service.get("alias", "postgres"))
            found.service_password = found.env.get("POSTGRES_PASSWORD")
        jobs.append(found)
    assert jobs, "a GitLab pipeline with no job"
    return jobs


def _github_expand(text: str, secrets_: Mapping[str, str], group: int | None) -> str:
    def value(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression == "matrix.group" and group is not None:
            return str(group)
        if expression.startswith("secrets.") and expression[8:] in secrets_:
            return secrets_[expression[8:]]
        pytest.fail(f"docs/ci.md uses ${{{{ {expression} }}}}, which this test cannot substitute")

    return EXPRESSION.sub(value, text)


def _gitlab_expand(text: str, variables: Mapping[str, str]) -> str:
    """GitLab expands ``$NAME`` in ``variables:`` from the project's (here: the secrets)."""
    return GITLAB_VARIABLE.sub(lambda m: variables[m.group(1) or m.group(2)], text)


@pytest.fixture(scope="session")
def sample_project(tmp_path_factory: pytest.TempPathFactory, unmocked_cache: Path) -> Path:
    """examples/quickstart with a ``.test_durations`` made by the page's ``bash`` block, run once
    on the embedded server as a developer would run it on their machine."""
    project = tmp_path_factory.mktemp("ci-sample") / "project"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    for block in bash_blocks():
        for command in block.splitlines():
            ran = run_command(command, project, _machine_env(unmocked_cache, {}))
            assert ran.returncode == 0, f"{command}:\n{ran.stdout}{ran.stderr}"
    assert (project / ".test_durations").is_file(), "the bash block records the durations"
    return project


@pytest.fixture
def shared_server_url() -> Iterator[str]:
    """A URL with a password, of a CREATEDB role made for the test (dropped with its databases)."""
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    role, password = f"unmocked_recipes_{uuid.uuid4().hex[:10]}", secrets.token_hex(12)
    with a_role_of_its_own(RUNNING_SERVER_URL, role, f"CREATEDB PASSWORD '{password}'") as url:
        yield url.replace(f"{role}@", f"{role}:{password}@", 1)


def _machine_env(cache: Path, job_env: Mapping[str, str]) -> dict[str, str]:
    """A new machine's environment, with this checkout's venv first on PATH and its code first
    on PYTHONPATH; pip may not download (unmocked is not on PyPI: it must find it installed)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UNMOCKED_", "PG", "PYTEST_", "DJANGO_")) and key != "DATABASE_URL"
    }
    return {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(Path(unmocked.__file__).resolve().parents[1]),
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UNMOCKED_CACHE_DIR": str(cache),  # the runner's ~/.cache/unmocked
        **job_env,
    }


def run_command(
    command: str, cwd: Path, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """One ``run:`` or ``script`` line, as the CI runs it: ``bash -e``."""
    return subprocess.run(
        ["bash", "-e", "-c", command],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@dataclass
class Ran:
    output: str
    outcomes: dict[str, tuple[str, str]]


@dataclass(frozen=True)
class Group:
    """One group of a job, as its own machine: commands and environment substituted."""

    commands: list[str]
    env: dict[str, str]


class Installs:
    """The ``pip install`` commands run so far in this test session (this xdist worker).

    Each finds everything installed and changes nothing, so a second run of one tells nothing
    new and costs seconds (pip's start on 2 busy cores): each distinct one runs once.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: set[str] = set()

    def run(self, command: str, cwd: Path, env: Mapping[str, str]) -> str:
        with self.lock:
            if command in self.done:
                return ""
            ran = run_command(command, cwd, env)
            assert ran.returncode == 0, f"`{command}` failed:\n{ran.stdout}{ran.stderr}"
            self.done.add(command)
            return ran.stdout + ran.stderr


@pytest.fixture(scope="session")
def installs() -> Installs:
    return Installs()


@pytest.fixture(scope="session")
def ran_jobs() -> set[tuple[tuple[str, ...], tuple[tuple[str, str], ...]]]:
    """Jobs run so far in this process, by commands and variables. The embedded default's jobs
    (runner, container, GitLab's, the cache recipe's) are all `pip install unmocked` and `pytest`
    with no variables: one run of them shows what every other would, at a few seconds each."""
    return set()


def run_group(job: Job, group: Group, project: Path, report: Path, installs: Installs) -> Ran:
    """Every command of one job's group in its own copy of the project."""
    env = {**group.env, "PYTEST_ADDOPTS": f"--junitxml={report}"}
    output = ""
    for command in group.commands:
        if command.startswith("pip install "):
            output += installs.run(command, project, env)
            continue
        ran = run_command(command, project, env)
        output += ran.stdout + ran.stderr
        assert ran.returncode == 0, f"job {job.name}: `{command}` failed:\n{ran.stdout}{ran.stderr}"
    return Ran(output, outcomes(report))


def run_groups(
    job: Job, groups: list[Group], project: Path, folder: Path, installs: Installs
) -> list[Ran]:
    """The job's groups all at once, each in its own copy of ``project`` under ``folder``."""

    def run(index: int) -> Ran:
        copy = _copy(project, folder / f"group-{index + 1}")
        return run_group(job, groups[index], copy, folder / f"group-{index + 1}.xml", installs)

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        return list(pool.map(run, range(len(groups))))


@pytest.mark.parametrize("recipe", recipes(), ids=lambda recipe: recipe.id)
def test_recipe_runs(
    recipe: Recipe,
    sample_project: Path,
    unmocked_cache: Path,
    tmp_path: Path,
    installs: Installs,
    ran_jobs: set[tuple[tuple[str, ...], tuple[tuple[str, str], ...]]],
    request: pytest.FixtureRequest,
) -> None:
    password = secrets.token_hex(12)
    given = {"POSTGRES_PASSWORD": password, "PG_PASSWORD": password}
    document = yaml.safe_load(recipe.text)
    jobs = (
        github_jobs(document, given)
        if recipe.platform == "github"
        else gitlab_jobs(document, given)
    )
    if any(job.service_password is not None for job in jobs) and not server_answers(
        RUNNING_SERVER_URL
    ):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}, the service's stand-in")
    # Sharded jobs share one server: the secret (GitHub) or project variable (GitLab) names it.
    shared = request.getfixturevalue("shared_server_url") if any(j.groups > 1 for j in jobs) else ""
    if shared:
        given["UNMOCKED_DATABASE_URL"] = shared
    for job in jobs:
        same = (tuple(job.commands), tuple(sorted(job.env.items())))
        if job.groups == 1 and job.service_password is None and same in ran_jobs:
            continue  # checked once already in this process: the same commands and variables
        ran_jobs.add(same)
        project = tmp_path / job.name / "project"
        shutil.copytree(sample_project, project)
        with (project / "migrations" / "001_accounts.sql").open("a") as migration:
            migration.write(f"-- {recipe.id} {job.name} {uuid.uuid4().hex}\n")  # its own template
        groups = [_group(recipe, job, index, given, unmocked_cache) for index in range(job.groups)]
        if job.service_password is not None:
            assert job.service_password == password
            url = groups[0].env["UNMOCKED_DATABASE_URL"]
            assert urlsplit(url).password == password, "the service's URL carries the secret"
        ran = run_groups(job, groups, project, tmp_path / job.name, installs)
        every = Counter(name for group in ran for name in group.outcomes)
        assert len(every) == SAMPLE_TESTS and set(every.values()) == {1}, every
        failed = {n: o for group in ran for n, o in group.outcomes.items() if o[0] != "passed"}
        assert not failed
        output = "".join(group.output for group in ran)
        assert password not in output, f"job {job.name} printed the service's password"
        if shared:
            assert str(urlsplit(shared).password) not in output, "the shared password was printed"
        built = len(re.findall(r"unmocked: .*template \w+ built in [\d.]+ s, ready", output))
        reused = len(re.findall(r"unmocked: .*template \w+ reused, ready", output))
        assert (built, reused) == (1, job.groups - 1), output


def _group(recipe: Recipe, job: Job, index: int, given: Mapping[str, str], cache: Path) -> Group:
    """Group ``index`` (from 0) of ``job``: its CI's expressions and variables substituted."""
    commands = job.commands
    if recipe.platform == "github":
        env = {k: _github_expand(v, given, index + 1) for k, v in job.env.items()}
        commands = [_github_expand(command, given, index + 1) for command in job.commands]
    else:
        env = {**given, **job.env}
        if job.groups > 1:
            env |= {"CI_NODE_INDEX": str(index + 1), "CI_NODE_TOTAL": str(job.groups)}
        for host in job.service_hosts:  # no service network here: the alias is this machine
            env = {k: v.replace(f"@{host}:", "@127.0.0.1:") for k, v in env.items()}
    return Group(commands, _machine_env(cache, env))


def _copy(project: Path, to: Path) -> Path:
    """A job of its own checks out the project anew: a copy for every group."""
    shutil.copytree(project, to)
    return to


def test_every_recipe_is_on_the_page() -> None:
    """Both CIs for the embedded default, the service container and the shards; one cache."""
    ids = [recipe.id for recipe in recipes()]
    for section in ("the-embedded-default", "a-services-postgres", "a-suite-sharded"):
        for platform in ("github", "gitlab"):
            assert any(i.startswith(f"{platform}-{section}") for i in ids), (platform, section)
    assert any("caching" in i for i in ids), ids
