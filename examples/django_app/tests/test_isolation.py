"""No test sees another's rows, whichever fixture it uses and in whatever order tests run.

``db`` tests share this process's database and are rolled back; every ``transactional_db`` test
gets a brand-new database of its own, cloned from the template, so real commits are visible to
every connection during the test and gone after it. Run with ``-p randomly`` and ``-n 2``: nothing
here depends on order or on which worker runs what.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from catalog.models import Category, Product
from tests.threads import backend_pid, own_connection


@pytest.mark.parametrize("attempt", range(3))
def test_rollback_tests_never_see_each_others_rows(db, make_product, attempt):
    make_product("SAME")
    assert Product.objects.count() == 1


@pytest.mark.parametrize("attempt", range(3))
def test_transactional_tests_never_see_each_others_commits(transactional_db, make_product, attempt):
    make_product("SAME")
    assert Product.objects.count() == 1


@pytest.mark.parametrize("attempt", range(2))
def test_transactional_tests_keep_the_rows_of_the_data_migration(transactional_db, attempt):
    """Django's flush after a transactional test deletes rows that data migrations made, and later
    tests lose them unless they ask for ``serialized_rollback``; a fresh clone keeps them."""
    assert Category.objects.count() == 3


def test_a_commit_is_visible_to_another_connection(transactional_db, make_product):
    make_product("SHARED")

    def count_elsewhere() -> tuple[int, int]:
        return Product.objects.count(), backend_pid()

    with ThreadPoolExecutor(1) as pool:
        count, other_backend = pool.submit(own_connection(count_elsewhere)).result()
    assert count == 1
    assert other_backend != backend_pid()
