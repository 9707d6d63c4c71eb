"""Rollback isolation: every test runs inside one outer transaction that is rolled back after it.

Code under test keeps production's transaction semantics: its ``commit()`` ends a unit of work and
starts the next (a savepoint is released and a new one set), its ``rollback()`` undoes the unit of
work (back to that savepoint), ``with conn.transaction():`` nests as usual and an error inside it
leaves the connection usable. A ``commit()`` also checks DEFERRABLE INITIALLY DEFERRED constraints,
as a real COMMIT would, and fails the same way when they are violated.

What one outer transaction cannot keep: ``now()`` stays at the test's start, sequences do not roll
back, and a raw ``COMMIT``/``ROLLBACK`` statement ends the outer transaction (unmocked notices and
rebuilds the database, so the next test is still isolated). Tests that need any of that ask for a
fresh database instead (the ``pg_url`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import generators
from psycopg.abc import PQGen
from psycopg.pq import ExecStatus, TransactionStatus

UNIT_OF_WORK = b"unmocked_unit_of_work"

# A real COMMIT checks deferred constraints; releasing a savepoint does not. Switching every
# constraint to IMMEDIATE checks them now, then the initially deferred ones are switched back so
# the next unit of work starts as a real transaction would.
CHECK_DEFERRED_CONSTRAINTS = b"""DO $unmocked$
DECLARE deferred text;
BEGIN
  SET CONSTRAINTS ALL IMMEDIATE;
  SELECT string_agg(format('%I.%I', n.nspname, c.conname), ', ') INTO deferred
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.condeferred;
  IF deferred IS NOT NULL THEN
    EXECUTE 'SET CONSTRAINTS ' || deferred || ' DEFERRED';
  END IF;
END $unmocked$"""

# What survives a ROLLBACK in a session and could leak into the next test.
RESET_SESSION = (
    b"DEALLOCATE ALL; SELECT pg_advisory_unlock_all(); DISCARD SEQUENCES; "
    b"SET SESSION AUTHORIZATION DEFAULT; RESET ALL"
)


class OuterTransactionLost(Exception):
    """The test ended the outer transaction itself, so its effects may have been committed."""


class RollbackConnection(psycopg.Connection[Any]):
    """A psycopg connection whose commits and rollbacks stay inside a test's outer transaction."""

    def begin_test(self) -> None:
        """Open the outer transaction and the first unit of work."""
        self.wait(self._script(b"BEGIN; SAVEPOINT " + UNIT_OF_WORK))

    def end_test(self) -> None:
        """Roll everything back and clear session state; raise if the test escaped the transaction.

        Raises :class:`OuterTransactionLost` when the outer transaction was ended by the test
        (a raw ``COMMIT``): the caller must then treat the database as dirty.
        """
        escaped = self.pgconn.transaction_status == TransactionStatus.IDLE
        self.wait(self._script(b"ROLLBACK"))
        self.wait(self._script(RESET_SESSION))
        self._prepared.clear()
        if escaped:
            raise OuterTransactionLost()

    @contextmanager
    def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> Iterator[psycopg.Transaction]:
        """As psycopg's, and the outermost block commits on success, as it would in production."""
        outermost = not self._num_transactions
        with super().transaction(savepoint_name, force_rollback) as transaction:
            yield transaction
        if outermost and not force_rollback:
            self.commit()

    def _commit_gen(self) -> PQGen[None]:
        # Keep psycopg's own checks (inside transaction(), two-phase) before ours.
        if self._num_transactions or self._tpc:
            yield from super()._commit_gen()
        if self.pgconn.transaction_status == TransactionStatus.INERROR:
            # As COMMIT does in a failed transaction: the work is rolled back, no error raised.
            yield from self._exec_command(b"ROLLBACK TO SAVEPOINT " + UNIT_OF_WORK)
            return
        try:
            yield from self._exec_command(CHECK_DEFERRED_CONSTRAINTS)
        except psycopg.Error:
            # A failed COMMIT leaves nothing of the transaction behind; neither do we.
            yield from self._exec_command(b"ROLLBACK TO SAVEPOINT " + UNIT_OF_WORK)
            raise
        yield from self._exec_command(b"RELEASE SAVEPOINT " + UNIT_OF_WORK)
        yield from self._exec_command(b"SAVEPOINT " + UNIT_OF_WORK)

    def _rollback_gen(self) -> PQGen[None]:
        if self._num_transactions or self._tpc:
            yield from super()._rollback_gen()
        yield from self._exec_command(b"ROLLBACK TO SAVEPOINT " + UNIT_OF_WORK)
        self._prepared.clear()

    def _script(self, script: bytes) -> PQGen[None]:
        """Send several statements in one round trip (simple query protocol)."""
        self.pgconn.send_query(script)
        results = yield from generators.execute(self.pgconn)
        for result in results:
            if result.status == ExecStatus.FATAL_ERROR:
                raise psycopg.errors.error_from_result(result, encoding=self.pgconn._encoding)
