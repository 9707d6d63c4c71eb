"""A change to the SQLAlchemy models is a new template in the very next run, on a server of each
kind: nothing ``create_all`` would run differently may be served from a template built before it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from helpers import EACH_KIND_OF_SERVER

PROVIDERS = EACH_KIND_OF_SERVER

MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("status", sa.Enum({statuses}, name="order_status"), nullable=False),
    comment={project!r},  # this test's own template, never one an earlier session built
)
"""

TEST_ORDER = """
def test_an_order_can_be_{status}(pg):
    pg.execute("INSERT INTO orders (id, status) VALUES (1, '{status}')")
"""


def test_a_new_enum_value_in_the_models_is_in_the_next_runs_template(
    user_project: pytest.Pytester, set_migrations: Callable[[str], None]
) -> None:
    set_migrations("models:metadata")
    project = str(user_project.path)
    user_project.makepyfile(models=MODELS.format(statuses="'new', 'paid'", project=project))
    user_project.makepyfile(test_orders=TEST_ORDER.format(status="paid"))
    user_project.runpytest("-p", "no:randomly").assert_outcomes(passed=1)

    user_project.makepyfile(
        models=MODELS.format(statuses="'new', 'paid', 'refunded'", project=project)
    )
    user_project.makepyfile(test_orders=TEST_ORDER.format(status="refunded"))
    result = user_project.runpytest("-p", "no:randomly")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["unmocked: PostgreSQL *, template * built in *"])
