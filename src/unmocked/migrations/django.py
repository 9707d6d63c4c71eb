"""Django's own ``migrate`` as the source of unmocked's template database.

The fingerprint covers what decides the schema ``migrate`` builds: every migration file of every
installed app (wherever ``MIGRATION_MODULES`` puts them), the whole source of apps that have no
migrations (``migrate --run-syncdb`` builds their tables from the models), Django's version, the
database engine and the settings that change tables (``AUTH_USER_MODEL``, ``DEFAULT_AUTO_FIELD``,
a ``search_path`` in ``OPTIONS``, database cache tables). The server's major version is added by
:mod:`unmocked.templates`. Code that a data migration imports from elsewhere is not covered.

Django must be installed and set up (``django.setup()``) before a source is used; it is imported
inside functions so that ``import unmocked`` works without it.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from unmocked.errors import MigrationError
from unmocked.migrations import digest
from unmocked.urls import redact

# Keys of a DATABASES entry that say where the database is; the rest (OPTIONS aside) is behaviour.
LOCATION_KEYS = ("NAME", "HOST", "PORT", "USER", "PASSWORD")

# Every Django connection (of any thread) that opened since connected_to() was first used.
_opened: weakref.WeakSet[Any] = weakref.WeakSet()
_opened_lock = threading.Lock()


class DjangoMigrations:
    """``manage.py migrate`` (and ``createcachetable``) for one database alias."""

    def __init__(
        self,
        alias: str = "default",
        *,
        use_migrations: bool = True,
        database_access: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        """``use_migrations=False`` builds every table from the models (pytest-django's
        ``--nomigrations``); ``database_access`` wraps the build, for pytest-django's blocker."""
        self.alias = alias
        self.use_migrations = use_migrations
        self.database_access = database_access

    def describe(self) -> str:
        return f"Django migrations for the {self.alias!r} database"

    def fingerprint(self) -> str:
        from django import get_version
        from django.apps import apps
        from django.conf import settings
        from django.db import connections
        from django.db.migrations.loader import MigrationLoader

        settings_dict = connections[self.alias].settings_dict
        parts = [
            b"django",
            get_version().encode(),
            str(settings_dict["ENGINE"]).encode(),
            # The user model's table is chosen by a setting; unmigrated apps' keys by the other.
            str(settings.AUTH_USER_MODEL).encode(),
            str(settings.DEFAULT_AUTO_FIELD).encode(),
            repr(settings_dict.get("OPTIONS", {}).get("options")).encode(),
            repr(_database_cache_tables()).encode(),
        ]
        with self._migration_modules():
            for app in sorted(apps.get_app_configs(), key=lambda app: app.label):
                module_name, _ = MigrationLoader.migrations_module(app.label)
                folder = _package_folder(module_name) if module_name else None
                if folder is None and app.models_module is None:
                    continue
                parts.append(app.label.encode())
                parts += _python_files(folder or Path(app.path))
        return digest(*parts)

    def apply(self, url: str) -> None:
        from django.core.management import call_command
        from django.db import DatabaseError

        output = io.StringIO()
        with self.database_access(), self._migration_modules(), connected_to(url, self.alias):
            try:
                call_command(
                    "migrate",
                    database=self.alias,
                    run_syncdb=True,
                    interactive=False,
                    verbosity=1,
                    stdout=output,
                )
                call_command("createcachetable", database=self.alias, verbosity=0)
            except Exception as error:
                by_postgresql = " (PostgreSQL)" if isinstance(error, DatabaseError) else ""
                message = redact(str(error)).strip()
                raise MigrationError(
                    f"{_failing_step(output.getvalue())} failed: {type(error).__name__}: "
                    f"{message}{by_postgresql}. Fix it and run again; nothing was cached."
                ) from error

    def _migration_modules(self) -> AbstractContextManager[object]:
        """Migrations switched off, as Django's test runner does, when the user asked for that."""
        from django.apps import apps
        from django.db import connections
        from django.test.utils import override_settings

        test_settings = connections[self.alias].settings_dict.get("TEST", {})
        if self.use_migrations and test_settings.get("MIGRATE", True):
            return nullcontext()
        switched_off: AbstractContextManager[object] = override_settings(
            MIGRATION_MODULES={app.label: None for app in apps.get_app_configs()}
        )
        return switched_off


@contextmanager
def connected_to(url: str, *aliases: str) -> Iterator[None]:
    """Point Django's connections ``aliases`` at the database of ``url``; put them back after.

    The settings dictionaries are changed in place, as Django's test runner does: every thread's
    connection (a live server's too) is built from those same dictionaries, so all of them follow.
    Connections open before and after are closed, so none stays attached to the wrong database.
    """
    from django.db.backends.signals import connection_created

    connection_created.connect(_remember_opened, dispatch_uid=_remember_opened.__qualname__)
    location, url_options = _django_location(url)
    saved = []
    for alias in aliases:
        close_connections(alias)
        for settings_dict in _settings_dicts(alias):
            before = {key: settings_dict.get(key) for key in LOCATION_KEYS}
            saved.append((settings_dict, dict(before, OPTIONS=settings_dict.get("OPTIONS", {}))))
            options = dict(settings_dict.get("OPTIONS", {}), **url_options)
            # A service entry (pg_service.conf) would send the connection somewhere else.
            options.pop("service", None)
            settings_dict.update(location, OPTIONS=options)
    try:
        yield
    finally:
        for alias in aliases:
            close_connections(alias)
        for settings_dict, before in saved:
            settings_dict.update(before)


def _django_location(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """The DATABASES keys saying where ``url`` points, and its other libpq parameters."""
    params = {key: str(value) for key, value in conninfo_to_dict(url).items()}
    location = {
        "NAME": params.pop("dbname", "postgres"),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
    }
    return location, params


def _settings_dicts(alias: str) -> list[dict[str, Any]]:
    """The connection's settings and ``settings.DATABASES[alias]``, when they are two objects."""
    from django.conf import settings
    from django.db import connections

    found = [connections[alias].settings_dict]
    configured = settings.DATABASES.get(alias)
    if configured is not None and configured is not found[0]:
        found.append(configured)
    return found


def close_connections(alias: str) -> None:
    """Close ``alias``'s connections in every thread that opened one, not only this one.

    Thread pools, asgiref's executor (which runs the async ORM's queries) and a live server keep
    their threads' connections across tests; left open, they would stay attached to a database
    that is about to be dropped, and fail in the next test.
    """
    from django.db import connections

    here = connections[alias]
    with _opened_lock:
        opened = [connection for connection in _opened if connection.alias == alias]
    for connection in {id(c): c for c in [here, *opened]}.values():
        # Django refuses to close another thread's connection unless sharing is allowed.
        connection.inc_thread_sharing()
        try:
            connection.close()
        finally:
            connection.dec_thread_sharing()
    # A psycopg pool (OPTIONS["pool"], Django 5.1+) keeps connections to the old database.
    close_pool = getattr(here, "close_pool", None)
    if close_pool is not None:
        close_pool()


def _remember_opened(sender: object, connection: Any, **kwargs: object) -> None:
    with _opened_lock:
        _opened.add(connection)


def _package_folder(module_name: str) -> Path | None:
    """The folder of package ``module_name``, or None when there is no such package."""
    try:
        spec = importlib.util.find_spec(module_name)
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _python_files(folder: Path) -> list[bytes]:
    parts: list[bytes] = []
    for path in sorted(folder.rglob("*.py")):
        parts += [os.path.relpath(path, folder).encode(), path.read_bytes()]
    return parts


def _database_cache_tables() -> list[str]:
    """Tables ``createcachetable`` makes: one per cache using Django's database backend."""
    from django.conf import settings

    return sorted(
        str(cache.get("LOCATION"))
        for cache in settings.CACHES.values()
        if str(cache.get("BACKEND", "")).endswith(".DatabaseCache")
    )


def _failing_step(migrate_output: str) -> str:
    """``Django migration shop.0002_prices``: the migration ``migrate`` was applying, if any."""
    # A migration that failed has no " OK" after its "Applying ..." line.
    unfinished = re.search(r"Applying (\S+?)\.\.\.\s*$", migrate_output)
    return f"Django migration {unfinished[1]}" if unfinished else "Django's migrate"
