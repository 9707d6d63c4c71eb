"""What the user asked for, read once into one frozen :class:`Settings`.

Values come from three places, strongest first: ``--unmocked-*`` command-line flags, ``UNMOCKED_*``
environment variables, then ``unmocked_*`` keys of ``[tool.pytest.ini_options]``. The plugin gathers
the raw strings; everything here is plain Python so scripts and the CLI read settings the same way.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from unmocked.errors import ConfigurationError
from unmocked.urls import DatabaseURL, server_url

PROVIDERS = ("auto", "url", "embedded", "local", "docker")

# (ini key, environment variable, help text): the one list the plugin and the CLI register from.
OPTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "unmocked_migrations",
        "UNMOCKED_MIGRATIONS",
        "What builds the schema: a directory of .sql files, or module:attribute naming a "
        "SQLAlchemy MetaData or a callable that receives the template database's URL.",
    ),
    (
        "unmocked_provider",
        "UNMOCKED_PROVIDER",
        "Where the server comes from: auto (default), url, embedded, local or docker.",
    ),
    (
        "unmocked_pg_version",
        "UNMOCKED_PG_VERSION",
        "Major PostgreSQL version the server must be: embedded, local, docker or by URL "
        "(default: the embedded wheel, else the newest found; docker: 18).",
    ),
    (
        "unmocked_pg_version_mismatch",
        "UNMOCKED_PG_VERSION_MISMATCH",
        "A server by UNMOCKED_DATABASE_URL of another major than unmocked_pg_version: fail "
        "(default) refuses it; warn tests on it, saying so in the run's header.",
    ),
    (
        "unmocked_image",
        "UNMOCKED_IMAGE",
        "The Docker image unmocked_provider = docker runs (for example postgis/postgis:17-3.5; "
        "default postgres:<unmocked_pg_version>).",
    ),
    (
        "unmocked_server_settings",
        "UNMOCKED_SERVER_SETTINGS",
        "PostgreSQL settings for a server unmocked starts, as name=value pairs separated by "
        "commas or new lines (for example max_prepared_transactions=10).",
    ),
    (
        "unmocked_extensions",
        "UNMOCKED_EXTENSIONS",
        "Extensions to create in the template before the migrations run, separated by commas "
        "or spaces (for example pg_trgm, citext).",
    ),
    (
        "unmocked_export_env",
        "UNMOCKED_EXPORT_ENV",
        "true: export a database as DATABASE_URL and the PG* variables (and unmocked_env) before "
        "conftest.py is imported, for suites that read their database from the environment.",
    ),
    (
        "unmocked_env",
        "UNMOCKED_ENV",
        "More variables to export, as NAME=TEMPLATE lines (for example "
        "SQLALCHEMY_URL={url:asyncpg} or DB_HOST={host}).",
    ),
    (
        "unmocked_env_database",
        "UNMOCKED_ENV_DATABASE",
        "Which database the exported variables name under pytest-xdist: shared (default, one "
        "for all workers) or per-worker.",
    ),
    (
        "unmocked_build_timeout",
        "UNMOCKED_BUILD_TIMEOUT",
        "Seconds a template build (the migrations) may take before it is cancelled, and a run "
        "waits for another run's build (default 600; 0 for no limit).",
    ),
    (
        "unmocked_max_connections",
        "UNMOCKED_MAX_CONNECTIONS",
        "Connections the whole run (its xdist workers together) may hold on the server: unmocked's "
        "own and its tests' to its databases; at the limit a test waits for one to come free "
        "(default: the server's limit only).",
    ),
    (
        "unmocked_connection_wait",
        "UNMOCKED_CONNECTION_WAIT",
        "Seconds a test waits for a connection to come free, at unmocked_max_connections or the "
        "server's limit, before it fails naming who holds them (default 30).",
    ),
    (
        "unmocked_django",
        "UNMOCKED_DJANGO",
        "auto (default): with pytest-django, Django's test databases are clones of unmocked's "
        "template; off: pytest-django sets them up as it does without unmocked.",
    ),
    (
        "unmocked_n_plus_one",
        "UNMOCKED_N_PLUS_ONE",
        "off, warn (default) or fail: every test whose code sends one SELECT shape "
        "unmocked_n_plus_one_threshold times or more (an N+1) warns, or fails.",
    ),
    (
        "unmocked_n_plus_one_threshold",
        "UNMOCKED_N_PLUS_ONE_THRESHOLD",
        "How often one SELECT shape may run in a test before unmocked_n_plus_one reports it "
        "(default 5).",
    ),
    (
        "unmocked_indexed_tables",
        "UNMOCKED_INDEXED_TABLES",
        "Tables no statement of any test may read in full for want of an index, separated by "
        "commas or spaces (for example orders, users); reported as unmocked_indexed says.",
    ),
    (
        "unmocked_indexed",
        "UNMOCKED_INDEXED",
        "warn (default) or fail: what a statement reading one of unmocked_indexed_tables in "
        "full does.",
    ),
    (
        "unmocked_role",
        "UNMOCKED_ROLE",
        "The application's role, which the migrations create: the tests' sessions run as it "
        "instead of a superuser, so GRANTs and row-level security act as in production.",
    ),
    (
        "unmocked_leaks",
        "UNMOCKED_LEAKS",
        "Connections a pg_url test leaves open to its database (ended either way): warn "
        "(default) names them in a warning, fail errors the test at teardown, off does not look.",
    ),
)

# Ten minutes: far beyond the migrations of any test schema seen (seconds, a minute for large
# Django projects), and well inside a CI job's own limit, so a hanging migration fails the run
# with its name instead of being killed by CI without a word.
DEFAULT_BUILD_TIMEOUT = 600.0

# Half a minute: long enough for another job's tests to end and give their connections back,
# short enough that a server full for good fails the test before CI's own limit does.
DEFAULT_CONNECTION_WAIT = 30.0
# A run's fewest connections: its admin session (which holds its lease) and one for its tests.
FEWEST_CONNECTIONS = 2

ENV_DATABASE_MODES = ("shared", "per-worker")
DJANGO_MODES = ("auto", "off")
CHECK_MODES = ("off", "warn", "fail")
DEFAULT_N_PLUS_ONE_THRESHOLD = 5
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``$UNMOCKED_CACHE_DIR``, else ``$XDG_CACHE_HOME/unmocked``, else ``~/.cache/unmocked``."""
    if env.get("UNMOCKED_CACHE_DIR"):
        return Path(env["UNMOCKED_CACHE_DIR"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "unmocked"
    return Path.home() / ".cache" / "unmocked"


@dataclass(frozen=True)
class Settings:
    """Everything unmocked needs to know before it finds a server and builds a template."""

    migrations: str = ""
    provider: str = "auto"
    pg_version: int | None = None
    image: str = ""
    """``unmocked_image``: the Docker image of the ``docker`` provider; empty: ``postgres:<major>``
    (see :mod:`unmocked.servers.containers`)."""
    database_url: str | None = None
    """``UNMOCKED_DATABASE_URL`` (a URL or a key=value DSN) as one complete
    :class:`~unmocked.urls.DatabaseURL`, whose repr hides the password; see
    :func:`read_database_url`."""
    server_settings: tuple[tuple[str, str], ...] = ()
    """``(name, value)`` pairs passed to a server unmocked starts, after its own test tuning."""
    extensions: tuple[str, ...] = ()
    """Extensions created in the template before the migrations run."""
    export_env: bool = False
    """Export a database into the environment before conftest.py is imported (pytest)."""
    env: tuple[tuple[str, str], ...] = ()
    """``(NAME, TEMPLATE)`` pairs exported besides the libpq variables and ``DATABASE_URL``."""
    env_database: str = "shared"
    """``shared`` or ``per-worker``: the database exported to pytest-xdist workers."""
    build_timeout: float = DEFAULT_BUILD_TIMEOUT
    """Seconds a template build may take (and a run wait for another's); 0 for no limit."""
    max_connections: int | None = None
    """``unmocked_max_connections``: what the whole run may hold on the server (see
    :mod:`unmocked.connection_budget`); None: the server's limit only."""
    connection_wait: float = DEFAULT_CONNECTION_WAIT
    """Seconds a test waits for a connection to come free before it fails."""
    django: str = "auto"
    """``auto``: serve pytest-django's databases (see :mod:`unmocked.plugin.django`); ``off``."""
    n_plus_one: str = "warn"
    """What a test whose code sends one SELECT shape ``n_plus_one_threshold`` times does:
    ``off``, ``warn`` or ``fail`` (see :mod:`unmocked.checks.suite`)."""
    n_plus_one_threshold: int = DEFAULT_N_PLUS_ONE_THRESHOLD
    indexed_tables: tuple[str, ...] = ()
    """Tables no test's statement may read in full; reported as :attr:`indexed` says."""
    indexed: str = "warn"
    role: str = ""
    """The role tests' sessions run as (see :mod:`unmocked.roles`); empty: the admin's."""
    leaks: str = "warn"
    """``warn``, ``fail`` or ``off``: what connections a ``pg_url`` test left open to its database
    give (see :mod:`unmocked.checks.leaks`)."""
    pg_version_mismatch: str = "fail"
    """``fail`` or ``warn``: what a server by URL of another major than :attr:`pg_version` gives
    (see :func:`unmocked.servers.existing.attach`)."""
    cache_dir: Path = field(default_factory=lambda: default_cache_dir(os.environ))
    root_dir: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        if self.database_url and not isinstance(self.database_url, DatabaseURL):
            object.__setattr__(
                self, "database_url", read_database_url(self.database_url, self.provider)
            )
        if self.provider not in PROVIDERS:
            raise ConfigurationError(
                f"unmocked_provider = {self.provider!r} is not a provider unmocked knows. "
                f"Use one of: {', '.join(PROVIDERS)}."
            )
        if self.provider == "url" and not self.database_url:
            raise ConfigurationError(
                "unmocked_provider = 'url' needs UNMOCKED_DATABASE_URL: set it to an admin URL "
                "of the server to use, for example postgresql://postgres@127.0.0.1:5432/postgres."
            )
        if self.env_database not in ENV_DATABASE_MODES:
            raise ConfigurationError(
                f"unmocked_env_database = {self.env_database!r}: use shared (one database for "
                "every xdist worker) or per-worker (a database of each worker's own)."
            )
        if self.django not in DJANGO_MODES:
            raise ConfigurationError(
                f"unmocked_django = {self.django!r}: use auto (unmocked serves pytest-django's "
                "databases) or off (pytest-django sets them up as without unmocked)."
            )
        for name, mode, allowed in (
            ("unmocked_n_plus_one", self.n_plus_one, CHECK_MODES),
            ("unmocked_indexed", self.indexed, CHECK_MODES[1:]),
            ("unmocked_leaks", self.leaks, CHECK_MODES),
            ("unmocked_pg_version_mismatch", self.pg_version_mismatch, CHECK_MODES[1:]),
        ):
            if mode not in allowed:
                raise ConfigurationError(
                    f"{name} = {mode!r} is not a mode unmocked knows. Use one of: "
                    f"{', '.join(allowed)}."
                )

    @classmethod
    def from_values(
        cls,
        flags: Mapping[str, str | None],
        env: Mapping[str, str],
        root_dir: Path,
        ini: Mapping[str, object] | None = None,
    ) -> Settings:
        """Build settings from command-line ``flags``, the environment and ``ini`` values.

        Both mappings are keyed by ini name. The first one set wins: a flag, then the environment
        (so CI can override a project's ini file), then the ini file.
        """

        def pick(ini_key: str, env_key: str) -> str:
            for given in (flags.get(ini_key), env.get(env_key), (ini or {}).get(ini_key)):
                if isinstance(given, (list, tuple)):  # a TOML array in [tool.pytest.ini_options]
                    given = "\n".join(str(item) for item in given)
                if given is not None and str(given).strip():
                    return str(given).strip()
            return ""

        raw_export = pick("unmocked_export_env", "UNMOCKED_EXPORT_ENV").lower()
        if raw_export not in _TRUE + _FALSE:
            raise ConfigurationError(f"unmocked_export_env = {raw_export!r}: write true or false.")
        provider = pick("unmocked_provider", "UNMOCKED_PROVIDER") or "auto"
        raw_version = pick("unmocked_pg_version", "UNMOCKED_PG_VERSION")
        try:
            pg_version = int(raw_version) if raw_version else None
        except ValueError:
            raise ConfigurationError(
                f"unmocked_pg_version = {raw_version!r} is not a major version number; "
                "write it as 15, 16, 17 or 18."
            ) from None
        build_timeout = _seconds(
            "unmocked_build_timeout",
            pick("unmocked_build_timeout", "UNMOCKED_BUILD_TIMEOUT"),
            DEFAULT_BUILD_TIMEOUT,
            "0 for no limit",
        )
        raw_most = pick("unmocked_max_connections", "UNMOCKED_MAX_CONNECTIONS")
        if raw_most and not (raw_most.isdigit() and int(raw_most) >= FEWEST_CONNECTIONS):
            raise ConfigurationError(
                f"unmocked_max_connections = {raw_most!r}: write how many connections the whole "
                f"run may hold on the server, a whole number of {FEWEST_CONNECTIONS} or more (its "
                "admin session and one for its tests), or leave it out for the "
                "server's own limit."
            )
        connection_wait = _seconds(
            "unmocked_connection_wait",
            pick("unmocked_connection_wait", "UNMOCKED_CONNECTION_WAIT"),
            DEFAULT_CONNECTION_WAIT,
            "0 to fail at once",
        )
        raw_threshold = pick("unmocked_n_plus_one_threshold", "UNMOCKED_N_PLUS_ONE_THRESHOLD")
        if raw_threshold and not (raw_threshold.isdigit() and int(raw_threshold) >= 2):
            raise ConfigurationError(
                f"unmocked_n_plus_one_threshold = {raw_threshold!r}: write how often one "
                f"statement shape may run in a test before it is reported, a whole number of 2 "
                f"or more (default {DEFAULT_N_PLUS_ONE_THRESHOLD})."
            )
        return cls(
            migrations=pick("unmocked_migrations", "UNMOCKED_MIGRATIONS"),
            provider=provider,
            pg_version=pg_version,
            image=pick("unmocked_image", "UNMOCKED_IMAGE"),
            database_url=read_database_url(env.get("UNMOCKED_DATABASE_URL", ""), provider, env),
            server_settings=parse_server_settings(
                pick("unmocked_server_settings", "UNMOCKED_SERVER_SETTINGS")
            ),
            extensions=_names(pick("unmocked_extensions", "UNMOCKED_EXTENSIONS")),
            export_env=raw_export in _TRUE,
            env=parse_env_templates(pick("unmocked_env", "UNMOCKED_ENV")),
            env_database=pick("unmocked_env_database", "UNMOCKED_ENV_DATABASE") or "shared",
            build_timeout=build_timeout,
            max_connections=int(raw_most) if raw_most else None,
            connection_wait=connection_wait,
            django=pick("unmocked_django", "UNMOCKED_DJANGO").lower() or "auto",
            n_plus_one=pick("unmocked_n_plus_one", "UNMOCKED_N_PLUS_ONE").lower() or "warn",
            n_plus_one_threshold=int(raw_threshold or DEFAULT_N_PLUS_ONE_THRESHOLD),
            indexed_tables=_names(pick("unmocked_indexed_tables", "UNMOCKED_INDEXED_TABLES")),
            indexed=pick("unmocked_indexed", "UNMOCKED_INDEXED").lower() or "warn",
            role=pick("unmocked_role", "UNMOCKED_ROLE"),
            leaks=pick("unmocked_leaks", "UNMOCKED_LEAKS").lower() or "warn",
            pg_version_mismatch=(
                pick("unmocked_pg_version_mismatch", "UNMOCKED_PG_VERSION_MISMATCH").lower()
                or "fail"
            ),
            cache_dir=default_cache_dir(env),
            root_dir=root_dir,
        )


def _seconds(name: str, raw: str, default: float, zero: str) -> float:
    """``raw`` (empty: ``default``) as a number of seconds, 0 or more; ``zero``: what 0 means."""
    try:
        seconds = float(raw) if raw else default
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigurationError(
            f"{name} = {raw!r} is not a number of seconds; write for example {default:g} (the "
            f"default), or {zero}."
        )
    return seconds


def _names(text: str) -> tuple[str, ...]:
    """``"a, b c"`` (commas, spaces or new lines between names) as ``("a", "b", "c")``."""
    return tuple(name for name in re.split(r"[\s,]+", text) if name)


def read_database_url(
    text: str, provider: str, env: Mapping[str, str] = os.environ
) -> DatabaseURL | None:
    """``UNMOCKED_DATABASE_URL`` as one complete URL, or refused now, when ``provider`` may use
    it; ``embedded``, ``local`` and ``docker`` never connect to it, so they keep it unread."""
    if not text.strip():
        return None
    if provider in ("auto", "url"):
        return server_url(text.strip(), "UNMOCKED_DATABASE_URL", env)
    return DatabaseURL(text.strip())


def parse_server_settings(text: str) -> tuple[tuple[str, str], ...]:
    """``"a=1, b = 2"`` (commas or new lines between pairs) as ``(("a", "1"), ("b", "2"))``."""
    pairs = []
    for item in re.split(r"[,\n]", text):
        if not item.strip():
            continue
        name, equals, value = item.partition("=")
        if not equals or not name.strip() or not value.strip():
            raise ConfigurationError(
                f"unmocked_server_settings: {item.strip()!r} is not of the form name=value "
                "(for example max_prepared_transactions=10)."
            )
        pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


def parse_env_templates(text: str) -> tuple[tuple[str, str], ...]:
    """``"A={host}\\nB={url}"`` as ``(("A", "{host}"), ("B", "{url}"))``.

    Pairs are separated by new lines (ini files) or by a comma before the next ``NAME=`` (one
    environment variable), so a template may itself hold commas.
    """
    pairs = []
    for item in re.split(r"\n|,(?=\s*[A-Za-z_][A-Za-z0-9_]*=)", text):
        if not item.strip():
            continue
        name, equals, template = item.strip().partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise ConfigurationError(
                f"unmocked_env: {item.strip()!r} is not of the form NAME=TEMPLATE (for example "
                "DATABASE__HOSTNAME={host} or SQLALCHEMY_URL={url:asyncpg})."
            )
        pairs.append((name.strip(), template.strip()))
    return tuple(pairs)


def project_ini(start: Path) -> tuple[Path, dict[str, str]]:
    """The project's root and its ``unmocked_*`` values, for commands that run outside pytest.

    Looks from ``start`` upwards for the first ``pytest.ini`` or ``pyproject.toml`` (as pytest
    does) and reads ``[pytest]``, ``[tool.pytest.ini_options]`` and ``[tool.unmocked]``, where keys
    may leave out the ``unmocked_`` prefix and lists stand for one value per line.
    """
    # Here, not at the top: only the CLI reads the files itself, and the parsers take ~4 ms to
    # import in every test run otherwise.
    import configparser

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pytest depends on tomli there
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

    for folder in (start, *start.parents):
        pytest_ini = folder / "pytest.ini"
        if pytest_ini.is_file():
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(pytest_ini)
            section = dict(parser["pytest"]) if parser.has_section("pytest") else {}
            return folder, _unmocked_values(section, {})
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                tool = tomllib.loads(pyproject.read_text()).get("tool", {})
            except tomllib.TOMLDecodeError as error:
                raise ConfigurationError(f"{pyproject}: {error}") from None
            pytest_ini_options = tool.get("pytest", {}).get("ini_options", {})
            return folder, _unmocked_values(pytest_ini_options, tool.get("unmocked", {}))
    return start, {}


def _unmocked_values(
    pytest_section: Mapping[str, object], unmocked_section: Mapping[str, object]
) -> dict[str, str]:
    """``unmocked_*`` keys of pytest's section, then ``[tool.unmocked]``'s keys, which win."""
    chosen = {key: value for key, value in pytest_section.items() if key.startswith("unmocked_")}
    for key, value in unmocked_section.items():
        chosen[key if key.startswith("unmocked_") else f"unmocked_{key}"] = value
    values = {}
    for key, value in chosen.items():
        if isinstance(value, list):
            value = "\n".join(str(item) for item in value)
        elif isinstance(value, bool):
            value = str(value).lower()
        values[key] = str(value)
    return values
