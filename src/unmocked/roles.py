"""``unmocked_role``: the tests' sessions run as the application's role, not as a superuser.

A superuser bypasses every GRANT and row-level-security policy, so a suite run as one cannot see
the permission errors and policy leaks production has. With ``unmocked_role = app``:

1. once the template is built, ``app`` must exist (the migrations create it, as production's do)
   and must not be a superuser; otherwise the run stops with one paragraph saying so;
2. each process makes a login role of its own for the run, ``unmocked_<run>_<n>_role``: a member
   of ``app``, without any attribute of its own, whose sessions start as ``app``
   (``ALTER ROLE ... SET role``), so ``current_user`` is ``app`` and ``RESET ROLE`` stays ``app``;
   its password is random and never printed;
3. every URL unmocked hands to tests (``pg``'s and the async fixtures' connections, ``pg_url``,
   Django's databases) logs in as it; unmocked's own sessions stay the admin's;
4. at the end of the run it is dropped, with what it owned in databases that remain (a kept
   failed test's) given to the admin first. A run that died leaves it to the next run's
   collection (:func:`unmocked.ownership.collect`), as it leaves its databases.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import psycopg
from psycopg import sql

from unmocked import ownership
from unmocked.errors import ConfigurationError
from unmocked.ownership import AdminConnection, Owner
from unmocked.servers import known_state
from unmocked.urls import DatabaseURL, with_credentials, with_database


@dataclass(frozen=True)
class LoginRole:
    """The run's login role acting as :attr:`acts_as`; its password is for URLs only."""

    name: str
    acts_as: str
    password: str

    def __repr__(self) -> str:
        return f"LoginRole({self.name!r} as {self.acts_as!r})"

    def url(self, url: str) -> DatabaseURL:
        """``url`` (same server and database) logging in as this role."""
        return with_credentials(url, self.name, self.password)


def login_as(admin: AdminConnection, role: str, name: str, run_id: str, server: str) -> LoginRole:
    """Make ``name``, a login role whose sessions run as ``role`` (steps 1 and 2)."""
    row = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if row is None:
        raise ConfigurationError(
            f"unmocked_role = {role!r}: no role of that name exists on {server} once the "
            "migrations ran. Create it in a migration, as production's are created (roles belong "
            f"to the whole server, so create it only if it is missing: DO $$ BEGIN CREATE ROLE "
            f"{role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;) and GRANT it "
            "what the application needs, or remove the setting."
        )
    if row[0]:
        raise ConfigurationError(
            f"unmocked_role = {role!r} is a superuser on {server}, which bypasses every GRANT "
            "and row-level-security policy: tests run as it would show nothing a superuser does "
            "not. Name the application's own role, without SUPERUSER."
        )
    login = LoginRole(name, role, secrets.token_urlsafe(24))
    names = {"login": sql.Identifier(name), "role": sql.Identifier(role)}
    with admin.transaction():
        admin.execute(
            sql.SQL(
                "CREATE ROLE {login} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT "
                "PASSWORD {password} IN ROLE {role}"
            ).format(password=sql.Literal(login.password), **names)
        )
        admin.execute(
            sql.SQL("ALTER ROLE {login} SET role = {value}").format(
                value=sql.Literal(role), **names
            )
        )
        ownership.record_role_owner(admin, name, Owner("role", run=run_id))
    return login


def drop_login(admin: AdminConnection, admin_url: str, login: LoginRole) -> None:
    """Drop ``login``, giving what it owns in the databases that remain to the admin (step 4)."""
    try:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login.name)))
        return
    except psycopg.errors.DependentObjectsStillExist:
        pass
    rows = admin.execute(
        "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
        "WHERE s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (login.name,),
    ).fetchall()
    major = admin.info.server_version // 10000
    for (database,) in rows:
        with known_state.connect(with_database(admin_url, str(database)), major) as inside:
            inside.execute(
                sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER; DROP OWNED BY {}").format(
                    sql.Identifier(login.name), sql.Identifier(login.name)
                )
            )
    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login.name)))
