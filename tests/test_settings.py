"""Settings: a flag beats the environment, which beats the ini file, which beats the default; bad
values are refused with a message that says what to write instead."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from unmocked.errors import ConfigurationError
from unmocked.settings import Settings, default_cache_dir, parse_env_templates, project_ini


def settings_from(
    values: dict[str, str | None] | None = None, env: dict[str, str] | None = None
) -> Settings:
    return Settings.from_values(values or {}, env or {}, Path("/project"))


def test_defaults_are_an_empty_schema_on_a_server_found_automatically() -> None:
    settings = settings_from()

    assert (settings.migrations, settings.provider, settings.pg_version) == ("", "auto", None)
    assert settings.database_url is None
    assert settings.root_dir == Path("/project")


@pytest.mark.parametrize(
    ("ini_key", "env_key", "given", "from_env", "field", "expected"),
    [
        ("unmocked_migrations", "UNMOCKED_MIGRATIONS", "db", "sql", "migrations", "db"),
        ("unmocked_provider", "UNMOCKED_PROVIDER", "local", "embedded", "provider", "local"),
        ("unmocked_pg_version", "UNMOCKED_PG_VERSION", "17", "15", "pg_version", 17),
        (
            "unmocked_image",
            "UNMOCKED_IMAGE",
            "postgis/postgis:17-3.5",
            "postgres:16",
            "image",
            "postgis/postgis:17-3.5",
        ),
    ],
)
def test_flag_beats_the_environment_which_beats_the_default(
    ini_key: str, env_key: str, given: str, from_env: str, field: str, expected: object
) -> None:
    env = {env_key: from_env}

    assert getattr(settings_from({ini_key: given}, env), field) == expected
    assert str(getattr(settings_from({}, env), field)) == from_env
    assert str(getattr(settings_from({ini_key: given}), field)) == given


def test_environment_beats_the_ini_file_which_beats_the_default() -> None:
    ini = {"unmocked_provider": "local", "unmocked_migrations": "db"}
    settings = Settings.from_values({}, {"UNMOCKED_PROVIDER": "embedded"}, Path("/p"), ini)

    assert (settings.provider, settings.migrations) == ("embedded", "db")


@pytest.mark.parametrize("unset", [None, ""])
def test_unset_flag_falls_back_to_the_environment(unset: str | None) -> None:
    settings = settings_from({"unmocked_provider": unset}, {"UNMOCKED_PROVIDER": "embedded"})

    assert settings.provider == "embedded"


def test_values_are_read_without_surrounding_whitespace() -> None:
    settings = settings_from(
        {"unmocked_migrations": "  db/migrations \n"}, {"UNMOCKED_PG_VERSION": " 16 "}
    )

    assert (settings.migrations, settings.pg_version) == ("db/migrations", 16)


@pytest.mark.parametrize(
    ("values", "env"),
    [({"unmocked_provider": "podman"}, {}), ({}, {"UNMOCKED_PROVIDER": "podman"})],
    ids=["flag", "env"],
)
def test_unknown_provider_is_refused_with_the_providers_to_choose_from(
    values: dict[str, str | None], env: dict[str, str]
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        settings_from(values, env)

    assert str(raised.value) == (
        "unmocked_provider = 'podman' is not a provider unmocked knows. "
        "Use one of: auto, url, embedded, local, docker."
    )


def test_the_docker_image_is_unmocked_image_else_the_official_one_of_the_major() -> None:
    from unmocked.servers.containers import image_for

    assert image_for(settings_from({"unmocked_pg_version": "16"})) == "postgres:16"
    assert image_for(settings_from()) == "postgres:18"
    chosen = settings_from(
        {"unmocked_pg_version": "17"}, {"UNMOCKED_IMAGE": "postgis/postgis:17-3.5"}
    )
    assert image_for(chosen) == "postgis/postgis:17-3.5"


@pytest.mark.parametrize("version", ["sixteen", "16.2", "v16"])
def test_pg_version_that_is_not_a_major_version_number_is_refused(version: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        settings_from({"unmocked_pg_version": version})

    assert str(raised.value).startswith(f"unmocked_pg_version = {version!r} is not a major version")


def test_url_provider_without_a_database_url_is_refused_saying_which_variable_to_set() -> None:
    with pytest.raises(ConfigurationError, match="needs UNMOCKED_DATABASE_URL"):
        settings_from({"unmocked_provider": "url"})


def test_url_provider_takes_the_server_from_unmocked_database_url() -> None:
    url = "postgresql://postgres@db.example:5432/postgres"

    settings = settings_from({"unmocked_provider": "url"}, {"UNMOCKED_DATABASE_URL": url})

    assert (settings.provider, settings.database_url) == ("url", url)


def test_settings_cannot_be_changed_once_read() -> None:
    settings = settings_from()

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.provider = "local"  # type: ignore[misc]


# -- the cache directory ----------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home directory of the test's own."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_cache_dir_is_unmocked_cache_dir_when_set(home: Path) -> None:
    env = {"UNMOCKED_CACHE_DIR": "~/pg-cache", "XDG_CACHE_HOME": "/xdg"}

    assert default_cache_dir(env) == home / "pg-cache"


def test_cache_dir_is_under_xdg_cache_home_when_unmocked_cache_dir_is_not_set(home: Path) -> None:
    env = {"UNMOCKED_CACHE_DIR": "", "XDG_CACHE_HOME": "/xdg"}

    assert default_cache_dir(env) == Path("/xdg/unmocked")


def test_cache_dir_is_under_the_home_cache_when_nothing_is_set(home: Path) -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": ""}) == home / ".cache" / "unmocked"


def test_settings_take_the_cache_dir_from_the_environment_they_are_given(home: Path) -> None:
    settings = settings_from({}, {"UNMOCKED_CACHE_DIR": "/caches/unmocked"})

    assert settings.cache_dir == Path("/caches/unmocked")


def test_env_templates_fill_every_placeholder_and_driver_urls() -> None:
    from unmocked.export.variables import database_variables as variables

    exported = variables(
        "postgresql://app:s%40cret@db.example:6543/postgres",
        "unmocked_x_env_1",
        parse_env_templates("HOST={host}:{port}, WHO={user}/{password}\nSA={url:asyncpg}"),
    )

    assert exported["DATABASE_URL"] == "postgresql://app:s%40cret@db.example:6543/unmocked_x_env_1"
    assert (exported["PGHOST"], exported["PGPORT"], exported["PGDATABASE"]) == (
        "db.example",
        "6543",
        "unmocked_x_env_1",
    )
    assert (exported["PGPASSWORD"], exported["WHO"]) == ("s@cret", "app/s@cret")
    assert exported["HOST"] == "db.example:6543"
    assert exported["SA"].startswith("postgresql+asyncpg://app:")


def test_no_password_means_no_pgpassword_and_unknown_placeholders_are_refused() -> None:
    from unmocked.export.variables import database_variables as variables

    assert "PGPASSWORD" not in variables("postgresql://postgres@127.0.0.1:5432/postgres", "d")
    with pytest.raises(ConfigurationError, match=r"\{hostname\}.*\{url:DRIVER\}"):
        variables("postgresql://postgres@127.0.0.1/postgres", "d", [("X", "{hostname}")])
    with pytest.raises(ConfigurationError, match="NAME=TEMPLATE"):
        parse_env_templates("not a pair")


def test_unmocked_run_reads_pytest_options_and_tool_unmocked_which_wins(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nunmocked_migrations = "db"\nunmocked_extensions = "citext"\n'
        'addopts = "-x"\n[tool.unmocked]\nmigrations = "sql"\nenv = ["A={host}", "B={port}"]\n'
    )
    (tmp_path / "sub").mkdir()

    root, ini = project_ini(tmp_path / "sub")
    settings = Settings.from_values({}, {}, root, ini)

    assert root == tmp_path
    assert (settings.migrations, settings.extensions) == ("sql", ("citext",))
    assert settings.env == (("A", "{host}"), ("B", "{port}"))
    assert "unmocked_addopts" not in ini


def test_max_connections_is_none_beyond_the_servers_and_the_wait_half_a_minute() -> None:
    settings = settings_from()

    assert (settings.max_connections, settings.connection_wait) == (None, 30.0)


def test_max_connections_and_the_wait_come_from_ini_or_environment_which_wins() -> None:
    ini = {"unmocked_max_connections": "8", "unmocked_connection_wait": "5"}
    env = {"UNMOCKED_MAX_CONNECTIONS": "12"}
    settings = Settings.from_values({}, env, Path("/p"), ini)

    assert (settings.max_connections, settings.connection_wait) == (12, 5.0)


@pytest.mark.parametrize("given", ["1", "0", "-4", "six", "6.5"])
def test_max_connections_below_a_runs_own_two_or_not_a_whole_number_is_refused(
    given: str,
) -> None:
    with pytest.raises(ConfigurationError, match=r"unmocked_max_connections = .*2 or more"):
        settings_from({"unmocked_max_connections": given})


@pytest.mark.parametrize("given", ["-1", "soon", "inf"])
def test_connection_wait_that_is_not_seconds_is_refused(given: str) -> None:
    with pytest.raises(ConfigurationError, match=r"unmocked_connection_wait = .* not a number"):
        settings_from({"unmocked_connection_wait": given})
