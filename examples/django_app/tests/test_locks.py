"""Row locks between two real sessions: what ``select_for_update`` is for, and what SQLite ignores.

These tests need two connections that see each other's commits, so they use ``transactional_db``:
each gets a fresh database of its own, dropped afterwards. The second session runs in a thread
(Django gives every thread its own connection).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction

from catalog import services
from catalog.models import Job
from tests.threads import backends_waiting_for_a_lock, own_connection

WAIT_SECONDS = 10


def wait_until(condition, timeout: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_second_buyer_waits_for_the_row_lock_then_sees_the_new_stock(
    transactional_db, make_product
):
    """Without ``select_for_update`` both buyers read ``stock = 1`` and the last item sells twice.

    SQLite turns ``select_for_update`` into nothing, so a SQLite suite cannot tell the difference.
    """
    product = make_product("LAST", stock=1)
    first_holds_the_lock = threading.Event()
    first_may_commit = threading.Event()

    def first_buyer() -> int:
        with transaction.atomic():
            reserved = services.reserve(product.pk, 1)
            first_holds_the_lock.set()
            first_may_commit.wait(WAIT_SECONDS)
        return reserved.stock

    with ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(own_connection(first_buyer))
            assert first_holds_the_lock.wait(WAIT_SECONDS)
            second = pool.submit(own_connection(services.reserve), product.pk, 1)
            assert wait_until(lambda: backends_waiting_for_a_lock() == 1)
            assert not second.done()
        finally:
            first_may_commit.set()
        assert first.result(WAIT_SECONDS) == 0
        with pytest.raises(services.OutOfStock):
            second.result(WAIT_SECONDS)
    product.refresh_from_db()
    assert product.stock == 0


def test_workers_skip_a_job_another_worker_is_claiming(transactional_db):
    """``SKIP LOCKED`` hands the second worker the next job at once instead of the same one."""
    jobs = [Job.objects.create(kind="email") for _ in range(2)]
    first_holds_a_job = threading.Event()
    first_may_commit = threading.Event()

    def first_worker() -> Job | None:
        with transaction.atomic():
            job = services.claim_next_job("first")
            first_holds_a_job.set()
            first_may_commit.wait(WAIT_SECONDS)
        return job

    # Without SKIP LOCKED this session would wait for the first worker: fail fast instead.
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '2s'")
    with ThreadPoolExecutor(1) as pool:
        try:
            first = pool.submit(own_connection(first_worker))
            assert first_holds_a_job.wait(WAIT_SECONDS)
            second_job = services.claim_next_job("second")
        finally:
            first_may_commit.set()
        first_job = first.result(WAIT_SECONDS)
    assert first_job is not None and second_job is not None
    assert {first_job.pk, second_job.pk} == {job.pk for job in jobs}
    assert services.claim_next_job("third") is None
    assert set(Job.objects.values_list("claimed_by", flat=True)) == {"first", "second"}
