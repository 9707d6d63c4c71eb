"""Alembic migrations: the template is built by ``alembic upgrade heads``, as the command would.

``unmocked_migrations = "alembic:alembic.ini"`` names the Alembic config file (relative to the
project root). Commands run as ``alembic -c alembic.ini`` started from that file's folder would
run them: relative paths in the config resolve the same way, a ``pyproject.toml`` with
``[tool.alembic]`` beside it is read too, and ``env.py`` runs unchanged. It is handed the
database twice, so the two common styles of ``env.py`` both reach it:

* the ``sqlalchemy.url`` option is set to its URL (psycopg driver), which the ``env.py`` written by
  ``alembic init`` reads through ``engine_from_config``;
* ``config.attributes["connection"]`` holds an open SQLAlchemy connection to it, which ``env.py``
  files following the Alembic cookbook ("sharing a connection") use instead.

The fingerprint covers every file of the script directory and of the version locations (``env.py``,
each revision, helpers beside them) and the options of the ``[alembic]`` section, so an edited
revision is a new template and never a stale one.
"""

from __future__ import annotations

import asyncio
import configparser
import importlib.util
import io
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from unmocked.errors import ConfigurationError, MigrationError
from unmocked.migrations import created_extensions, digest, postgres_message, shown_path
from unmocked.resources import Closeable
from unmocked.urls import redact, with_driver

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory
    from sqlalchemy.engine import Engine

PREFIX = "alembic:"

VersionTable = tuple[str | None, str]

# Options that differ between checkouts of the same project without changing the schema.
_OPTIONS_NOT_FINGERPRINTED = frozenset({"here", "sqlalchemy.url"})


def load_alembic(spec: str, root_dir: Path) -> AlembicMigrations:
    """``alembic:path/to/alembic.ini`` (relative to ``root_dir``) as a migration source."""
    config_file = (root_dir / spec[len(PREFIX) :].strip()).resolve()
    if not config_file.is_file():
        raise ConfigurationError(
            f"unmocked_migrations = {spec!r}: {config_file} is not a file. Name your Alembic "
            "config file, relative to the project root (for example alembic:alembic.ini)."
        )
    if importlib.util.find_spec("alembic") is None:
        raise ConfigurationError(
            f"unmocked_migrations = {spec!r} needs Alembic, which is not installed here: "
            "pip install alembic."
        )
    return AlembicMigrations(config_file, root_dir)


class AlembicMigrations:
    """The revisions of one Alembic project, applied up to every head."""

    def __init__(self, config_file: Path, root_dir: Path) -> None:
        self.config_file = config_file
        self.root_dir = root_dir

    def describe(self) -> str:
        return f"Alembic migrations of {shown_path(self.config_file, self.root_dir)}"

    def fingerprint(self) -> str:
        try:
            with AlembicCommands(self.config_file, None, self.root_dir) as alembic:
                return digest(b"alembic", *alembic.inputs())
        except Exception as error:
            # Alembic's own exceptions for a config it cannot read; here, before any database.
            raise ConfigurationError(
                f"{self.describe()}: {_reason(error)}. Fix the Alembic configuration."
            ) from None

    def extensions_created(self) -> list[str]:
        """The extensions the revisions (and files beside them) create, in order: read from the
        ``.py`` and ``.sql`` files, not by running them.

        A plain ``alembic.ini`` is read as text, since importing Alembic costs most of a second
        and this runs at every start; other configurations are read by Alembic itself.
        """
        folder = _script_folder(self.config_file)
        if folder is not None:
            found = [path for path in folder.rglob("*") if "__pycache__" not in path.parts]
        else:
            with AlembicCommands(self.config_file, None, self.root_dir) as alembic:
                found = alembic._files()
        files = sorted(path for path in found if path.suffix in (".py", ".sql") and path.is_file())
        texts = (path.read_bytes().decode("utf-8", errors="replace") for path in files)
        return list(dict.fromkeys(name for text in texts for name in created_extensions(text)))

    def apply(self, url: str) -> None:
        with AlembicCommands(self.config_file, url, self.root_dir) as alembic:
            try:
                alembic.upgrade("heads")
            except AlembicFailure as failure:
                raise MigrationError(
                    f"{failure}. Fix it and run again; nothing was cached."
                ) from None
            if alembic.revisions() and not _has_user_objects(url):
                raise MigrationError(
                    f"alembic upgrade heads ({self.describe()}) left the database unmocked gave "
                    "it empty: env.py connects somewhere else (a URL from settings or the "
                    "environment?). Make env.py use config.attributes['connection'], or the "
                    "sqlalchemy.url option, when set. Nothing was cached."
                )


class AlembicFailure(Exception):
    """An Alembic command failed: in which revision (if one), at which line, and why."""

    def __init__(self, revision: Script | None, location: str | None, reason: str) -> None:
        self.revision = revision
        self.location = location
        self.reason = reason
        super().__init__(self.where(), reason)

    def where(self, revision: Script | None = None) -> str:
        """``alembic revision <id> (<message>), <file>, line <n>``, or as much of it as is known.

        ``revision`` names the revision the caller was applying, for failures whose traceback
        passes through no revision file (Alembic refusing a target, a broken env.py).
        """
        named = self.revision or revision
        parts = [describe_revision(named)] if named else []
        if self.location:
            parts.append(self.location)
        return ", ".join(parts) or "alembic"

    def __str__(self) -> str:
        return f"{self.where()}: {self.reason}"


def describe_revision(revision: Script) -> str:
    message = (revision.doc or "").strip()
    return f"alembic revision {revision.revision}" + (f" ({message})" if message else "")


def _has_user_objects(url: str) -> bool:
    """True when the database holds any relation outside PostgreSQL's own schemas."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%')"
        ).fetchone()
    return bool(row and row[0])


class AlembicCommands(Closeable):
    """Alembic commands against one database, each run as the ``alembic`` command would run it.

    A context manager: it owns the engine behind ``config.attributes["connection"]``. With
    ``url=None`` it only reads the project (for the fingerprint).
    """

    def __init__(self, config_file: Path, url: str | None, shown_relative_to: Path) -> None:
        from alembic.config import Config

        self.config_file = config_file
        self.folder = config_file.parent
        self.shown_relative_to = shown_relative_to
        ini_file, toml_file = _config_files(config_file)
        # Commands print through config.print_stdout ("No new upgrade operations detected").
        self.config = (
            Config(ini_file, toml_file=toml_file, stdout=io.StringIO())
            if toml_file
            else Config(ini_file, stdout=io.StringIO())
        )
        self._engine: Engine | None = None
        if url is not None:
            import sqlalchemy

            driver_url = with_driver(url, "psycopg")
            # ConfigParser interpolates %(name)s, so a percent-encoded password needs escaping.
            self.config.set_main_option("sqlalchemy.url", driver_url.replace("%", "%%"))
            self._engine = sqlalchemy.create_engine(driver_url, poolclass=sqlalchemy.NullPool)
        self._script: ScriptDirectory | None = None
        self._inside_command = False

    # -- the project --------------------------------------------------------------------------

    @property
    def script(self) -> ScriptDirectory:
        if self._script is None:
            from alembic.script import ScriptDirectory

            with self._as_the_alembic_command():
                self._script = ScriptDirectory.from_config(self.config)
        return self._script

    def revisions(self) -> list[Script]:
        """Every revision, each after the revisions it depends on (base first)."""
        with self._as_the_alembic_command():
            return list(reversed(list(self.script.walk_revisions("base", "heads"))))

    def inputs(self) -> list[bytes]:
        """What shapes the schema: the ``[alembic]`` options, then each file's name and bytes."""
        parts = [_alembic_options(self.config)]
        for path in self._files():
            parts += [shown_path(path, self.folder).encode(), path.read_bytes()]
        return parts

    def _files(self) -> list[Path]:
        from alembic.util import coerce_resource_to_filename

        with self._as_the_alembic_command():
            folders = [Path(self.script.dir).absolute()] + [
                Path(coerce_resource_to_filename(location)).absolute()
                for location in self.script.version_locations
            ]
        return sorted(
            {
                path.resolve()
                for folder in folders
                if folder.is_dir()
                for path in folder.rglob("*")
                if path.is_file() and "__pycache__" not in path.parts
            }
        )

    # -- commands -----------------------------------------------------------------------------

    def upgrade(self, target: str) -> None:
        from alembic import command

        self.run(lambda config: command.upgrade(config, target))

    def downgrade(self, target: str) -> None:
        from alembic import command

        self.run(lambda config: command.downgrade(config, target))

    def version_table(self) -> VersionTable:
        """The (schema, name) of the table env.py has Alembic record versions in."""
        from alembic.runtime.environment import EnvironmentContext
        from alembic.runtime.migration import MigrationContext

        found: list[VersionTable] = []

        def read(_revision: object, context: MigrationContext) -> list[Any]:
            found.append((context.version_table_schema, context.version_table))
            return []

        def read_through_env_py(config: Config) -> None:
            with EnvironmentContext(config, self.script, fn=read, dont_mutate=True):
                self.script.run_env()

        self.run(read_through_env_py)
        return found[0] if found else (None, "alembic_version")

    def run(self, step: Callable[[Config], object]) -> None:
        """Run one command in a transaction of its own; raise :class:`AlembicFailure`."""
        try:
            with self._as_the_alembic_command():
                _outside_a_running_event_loop(lambda: self._in_a_transaction(step))
        except Exception as error:
            raise self._failure(error) from error

    def _in_a_transaction(self, step: Callable[[Config], object]) -> None:
        if self._engine is None:
            step(self.config)
            return
        with self._engine.begin() as connection:
            self.config.attributes["connection"] = connection
            try:
                step(self.config)
            finally:
                del self.config.attributes["connection"]

    @contextmanager
    def _as_the_alembic_command(self) -> Iterator[None]:
        """From the config file's folder; leaving ``sys.path`` and logging as they were.

        Relative ``script_location`` and ``prepend_sys_path`` mean "from where alembic is run",
        which is the config file's folder; Alembic prepends ``prepend_sys_path`` to ``sys.path``
        on every command; and env.py usually calls ``logging.config.fileConfig``, which disables
        every logger that already exists (the app's own, pytest's caplog would see nothing).
        """
        if self._inside_command:
            yield
            return
        cwd = os.getcwd()
        path = list(sys.path)
        with _logging_kept():
            os.chdir(self.folder)
            self._inside_command = True
            try:
                yield
            finally:
                self._inside_command = False
                os.chdir(cwd)
                sys.path[:] = path

    def _failure(self, error: BaseException) -> AlembicFailure:
        """Name what failed: the innermost revision file (or env.py) in the traceback."""
        reason = _reason(error)
        if isinstance(error, SyntaxError) and error.filename:
            # A revision that does not compile: Alembic could not load it, so name its file.
            file = shown_path(Path(error.filename), self.shown_relative_to)
            return AlembicFailure(None, f"{file}, line {error.lineno}", f"SyntaxError: {error.msg}")
        by_path = self._revisions_by_path()
        env_py = Path(self.script.env_py_location).resolve() if self._script else None
        for frame in reversed(traceback.extract_tb(error.__traceback__)):
            path = Path(frame.filename).resolve()
            if path in by_path or path == env_py:
                location = f"{shown_path(path, self.shown_relative_to)}, line {frame.lineno}"
                return AlembicFailure(by_path.get(path), location, reason)
        return AlembicFailure(None, None, reason)

    def _revisions_by_path(self) -> dict[Path, Script]:
        try:
            return {Path(script.path).resolve(): script for script in self.revisions()}
        except Exception:
            # The revisions themselves cannot be loaded; the failure is named without them.
            return {}

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _script_folder(config_file: Path) -> Path | None:
    """The script folder an ``alembic.ini`` names, read as text; None when finding it takes
    Alembic (a ``pyproject.toml`` configuration, ``version_locations``, a package resource or
    an interpolation in ``script_location``)."""
    pyproject = config_file.with_name("pyproject.toml")
    try:
        # Read as text: the [tool.alembic] table is looked up through Alembic, which is the cost.
        in_pyproject = pyproject.is_file() and "[tool.alembic" in pyproject.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    if config_file.suffix == ".toml" or in_pyproject:
        return None
    parser = configparser.RawConfigParser()
    try:
        parser.read(config_file)
        location = parser.get("alembic", "script_location").strip()
    except (configparser.Error, OSError):
        return None
    if parser.has_option("alembic", "version_locations") or "%" in location or ":" in location:
        return None
    # Relative to the config file's folder, where unmocked runs Alembic's commands from.
    folder = (config_file.parent / location).resolve()
    return folder if folder.is_dir() else None


def _config_files(config_file: Path) -> tuple[str | None, str | None]:
    """The ini and the pyproject.toml the ``alembic`` command would read from that folder."""
    if config_file.suffix == ".toml":
        ini = config_file.with_name("alembic.ini")
        return (str(ini) if ini.is_file() else None), str(config_file)
    toml = config_file.with_name("pyproject.toml")
    return str(config_file), (str(toml) if _has_alembic_table(toml) else None)


def _has_alembic_table(pyproject: Path) -> bool:
    if not pyproject.is_file():
        return False
    try:
        from alembic.util.compat import tomllib
    except ImportError:  # Alembic before 1.16 reads no pyproject.toml
        return False
    with pyproject.open("rb") as file:
        return "alembic" in tomllib.load(file).get("tool", {})


def _alembic_options(config: Config) -> bytes:
    """The main section's options as written (uninterpolated), and any ``[tool.alembic]`` table."""
    parser = config.file_config
    section = config.config_ini_section
    options = (
        {
            key: parser.get(section, key, raw=True)
            for key in parser.options(section)
            if key not in _OPTIONS_NOT_FINGERPRINTED
        }
        if parser.has_section(section)
        else {}
    )
    lines = [f"{key}={value}" for key, value in sorted(options.items())]
    if config.toml_file_name:
        lines.append(repr(sorted(config.toml_alembic_config.items())))
    return "\n".join(lines).encode()


def _reason(error: BaseException) -> str:
    """PostgreSQL's message when the database refused, else the exception as Python shows it."""
    database_error = getattr(error, "orig", error)
    if isinstance(database_error, psycopg.Error):
        return f"{postgres_message(database_error)} (PostgreSQL)"
    return redact(f"{type(error).__name__}: {error}".strip().rstrip("."))


def _outside_a_running_event_loop(step: Callable[[], None]) -> None:
    """Run ``step`` here, or in a thread of its own when an asyncio loop runs in this one.

    An async env.py calls ``asyncio.run()``, which refuses to start inside a running loop, as when
    an async test or fixture is what triggers the build or the check.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        step()
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(step).result()


@contextmanager
def _logging_kept() -> Iterator[None]:
    """Put every logger's level, handlers, propagation and enabled state back as they were."""
    saved = {
        logger: (logger.disabled, logger.level, list(logger.handlers), logger.propagate)
        for logger in _all_loggers()
    }
    try:
        yield
    finally:
        for logger in _all_loggers():
            disabled, level, handlers, propagate = saved.get(
                logger, (False, logging.NOTSET, [], True)
            )
            logger.disabled = disabled
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate


def _all_loggers() -> list[logging.Logger]:
    loggers = logging.Logger.manager.loggerDict.values()
    return [logging.getLogger()] + [item for item in loggers if isinstance(item, logging.Logger)]
