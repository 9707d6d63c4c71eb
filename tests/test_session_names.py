"""unmocked's own sessions say on the server which run, process, user and host opened them.

A server many machines share shows neither the client's host name nor its pid; the
application_name is what ``unmocked status`` and the connection budget read.
"""

from __future__ import annotations

import os
import socket

import psycopg

from unmocked import ownership
from unmocked.servers import known_state
from unmocked.session_names import IS_OWN_SESSION, SessionName, own_application_name

ADMIN_URL = os.environ.get(
    "UNMOCKED_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def test_a_name_reads_back_as_it_was_written() -> None:
    name = SessionName("0123456789", 4242, "ci", "runner-7")
    assert str(name) == "unmocked 0123456789 4242 ci@runner-7"
    assert SessionName.parse(str(name)) == name
    assert SessionName.parse("unmocked - 4242 ci@runner-7") == SessionName(
        None, 4242, "ci", "runner-7"
    )


def test_a_long_host_name_is_cut_short_but_never_the_run_or_the_pid() -> None:
    name = SessionName("0123456789", 4242, "ci", "h" * 80)
    assert len(str(name)) == 63
    parsed = SessionName.parse(str(name))
    assert parsed is not None and (parsed.run, parsed.pid) == ("0123456789", 4242)


def test_names_not_of_ours_are_none() -> None:
    for other in (None, "", "unmocked", "psql", "unmocked x y z", "unmocked r notapid u@h"):
        assert SessionName.parse(other) is None


def test_the_lease_and_the_admin_session_name_this_process_on_the_server() -> None:
    run = ownership.new_run_id()
    lease = ownership.Lease(ADMIN_URL, run)
    try:
        with known_state.connect(ADMIN_URL, 15) as admin:
            rows = admin.execute(
                f"SELECT application_name FROM pg_stat_activity WHERE {IS_OWN_SESSION} "
                "AND pid IN (%s, %s)",
                (lease.conn.info.backend_pid, admin.info.backend_pid),
            ).fetchall()
            names = {SessionName.parse(str(row[0])) for row in rows}
    finally:
        lease.close()
    host = socket.gethostname().split(".")[0]
    assert {name.run for name in names if name} == {run, None}
    assert {(name.pid, name.host) for name in names if name} == {(os.getpid(), host)}
    assert own_application_name().startswith("unmocked - ")


def test_the_code_under_tests_sessions_are_not_taken_for_ours() -> None:
    with psycopg.connect(ADMIN_URL, application_name="unmocked-fan") as conn:
        row = conn.execute(
            f"SELECT {IS_OWN_SESSION} FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert row == (False,)
