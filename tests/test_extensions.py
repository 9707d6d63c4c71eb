"""``unmocked_extensions``: created in the template before the migrations, so migrations that
assume them run unchanged; a missing one is named with what to install."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from unmocked import migrations
from unmocked.errors import MigrationError
from unmocked.session import UnmockedSession
from unmocked.settings import Settings


@pytest.fixture
def settings_for(tmp_path: Path, provider: dict[str, str], unmocked_cache: Path) -> Settings:
    """Settings for one provider, with migrations that need citext and pg_trgm."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "001.sql").write_text(
        "CREATE TABLE users (email citext UNIQUE);\n"
        "CREATE INDEX users_email_trgm ON users USING gin ((email::text) gin_trgm_ops);\n"
    )
    return Settings.from_values(
        {"unmocked_migrations": "migrations", "unmocked_extensions": "pg_trgm, citext"},
        provider,
        tmp_path,
    )


def test_migrations_that_assume_extensions_build_the_template(settings_for: Settings) -> None:
    with (
        UnmockedSession(settings_for) as session,
        session.fresh_database() as url,
        psycopg.connect(url) as conn,
    ):
        conn.execute("INSERT INTO users VALUES ('A@example.com')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO users VALUES ('a@EXAMPLE.com')")  # citext: same email


def test_extensions_are_part_of_the_fingerprint(tmp_path: Path) -> None:
    plain = Settings(root_dir=tmp_path)
    with_trgm = Settings(root_dir=tmp_path, extensions=("pg_trgm",))

    assert (
        migrations.from_settings(plain).fingerprint()
        != migrations.from_settings(with_trgm).fingerprint()
    )


def test_a_missing_extension_is_named_with_what_to_install(
    tmp_path: Path, provider: dict[str, str], unmocked_cache: Path
) -> None:
    settings = Settings.from_values(
        {"unmocked_extensions": "no_such_extension"}, provider, tmp_path
    )
    with UnmockedSession(settings) as session, pytest.raises(MigrationError) as raised:
        session.template()

    message = str(raised.value)
    assert message.startswith(
        "unmocked_extensions: CREATE EXTENSION no_such_extension failed: extension "
        '"no_such_extension" is not available (PostgreSQL). The server '
    )
    assert "Checked: " in message
    assert "(check the name; its package: apt-cache search postgresql-" in message
    assert "use a Docker image with it, with unmocked_provider = docker" in message
    if provider["UNMOCKED_PROVIDER"] == "local":  # already the provider: nothing more to set
        assert "unmocked_provider = auto" not in message
    assert "\n" not in message and message.endswith("Nothing was cached.")
