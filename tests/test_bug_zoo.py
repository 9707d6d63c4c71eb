"""The bug zoo (examples/bug_zoo): each buggy version is caught by its unmocked test and missed by
its mocked one, and the fixed versions pass every test.

The example's own suite runs once per version (``BUG_ZOO=buggy`` or not), on the embedded server,
and its JUnit XML report says how each test ended. The leak and the two role classes are caught by
settings being built for issue 12 (``unmocked_leaks``, ``unmocked_role``); their tests run once
the setting exists.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from helpers import embedded_env, needs_embedded, outcomes, run_pytest

pytestmark = needs_embedded

ZOO = Path(__file__).resolve().parents[1] / "examples" / "bug_zoo"
MOCKED = [
    "test_mocked_the_page_lists_each_customer_with_their_orders",
    "test_mocked_receipts_are_found_by_address",
    "test_mocked_an_unknown_sku_is_an_unknown_product",
    "test_mocked_a_tenant_owes_what_the_database_adds_up",
    "test_mocked_the_account_page_shows_the_users_profile",
]
UNMOCKED = [
    "test_unmocked_the_page_asks_for_every_customers_orders_at_once",
    "test_unmocked_receipts_are_found_by_address_through_an_index",
    "test_unmocked_an_unknown_sku_is_an_unknown_product",
    "test_unmocked_each_tenant_owes_the_sum_of_its_own_invoices",
    "test_unmocked_the_account_page_shows_the_users_profile",
]


def run_zoo(version: str, tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict:
    """How each test of the zoo ended when it ran ``version``: {name: (outcome, message)}."""
    project = tmp_path_factory.mktemp(version) / "bug_zoo"
    shutil.copytree(ZOO, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    report = project / "report.xml"
    result = run_pytest(
        "-p", "no:cacheprovider", f"--junitxml={report}",
        cwd=project, env=embedded_env(cache, BUG_ZOO=version),
    )  # fmt: skip
    assert report.exists(), result.stdout + result.stderr
    found = outcomes(report)
    assert sorted(found) == sorted(MOCKED + UNMOCKED), result.stdout
    return found


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory, unmocked_cache: Path) -> dict:
    return run_zoo("fixed", tmp_path_factory, unmocked_cache)


@pytest.fixture(scope="module")
def buggy(tmp_path_factory: pytest.TempPathFactory, unmocked_cache: Path) -> dict:
    return run_zoo("buggy", tmp_path_factory, unmocked_cache)


def assert_caught(buggy: dict, test: str, outcome: str, message: str) -> None:
    found_outcome, found_message = buggy[test]
    assert found_outcome == outcome and re.search(message, found_message), buggy[test]


def test_the_fixed_versions_pass_every_test(fixed: dict) -> None:
    assert {name: outcome for name, (outcome, _) in fixed.items()} == dict.fromkeys(
        MOCKED + UNMOCKED, "passed"
    ), fixed


def test_every_mocked_test_passes_the_buggy_versions_too(buggy: dict) -> None:
    assert {name: buggy[name][0] for name in MOCKED} == dict.fromkeys(MOCKED, "passed"), buggy


def test_an_n_plus_one_is_caught_by_no_n_plus_one(buggy: dict) -> None:
    assert_caught(
        buggy,
        "test_unmocked_the_page_asks_for_every_customers_orders_at_once",
        "failure",
        r"N\+1 queries: one statement ran 4 times .*, from zoo/n_plus_one\.py:",
    )


def test_a_lookup_no_index_serves_is_caught_by_indexed(buggy: dict) -> None:
    assert_caught(
        buggy,
        "test_unmocked_receipts_are_found_by_address_through_an_index",
        "failure",
        r"1 statement must read a whole table \(of receipts\)(.|\n)*reads receipts in full",
    )


def test_a_connection_left_open_on_an_error_path_is_caught_by_unmocked_leaks(
    buggy: dict,
) -> None:
    # An error at the teardown of a test whose call passed.
    assert_caught(
        buggy,
        "test_unmocked_an_unknown_sku_is_an_unknown_product",
        "error",
        r"left 1 connection open",
    )


def test_code_a_row_level_security_policy_breaks_is_caught_by_unmocked_role(buggy: dict) -> None:
    # Billed 0: the policy hid the rows of the tenant the code did not name.
    assert_caught(
        buggy,
        "test_unmocked_each_tenant_owes_the_sum_of_its_own_invoices",
        "failure",
        r"At index 0 diff: Decimal\('0'\) != Decimal\('120\.00'\)",
    )


def test_a_privilege_the_role_lacks_is_caught_by_unmocked_role(buggy: dict) -> None:
    assert_caught(
        buggy,
        "test_unmocked_the_account_page_shows_the_users_profile",
        "failure",
        r"permission denied for table users",
    )
