"""factory_boy factories write to the test's own session through ``current_session``: nothing is
set globally, ``"commit"`` persistence stays inside the test's rollback, and a factory used where
no session is bound says what to do.

Each guarantee is checked by running a whole pytest session with real factories. Isolation runs
on a server of each kind; the other tests run on the embedded server only, as what they check does
not depend on where the server came from.
"""

from __future__ import annotations

import pytest

from helpers import EACH_KIND_OF_SERVER, ONE_PROVIDER

PROVIDERS = EACH_KIND_OF_SERVER

MODELS = """
from decimal import Decimal

from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]

class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    amount: Mapped[Decimal]
    user: Mapped[User] = relationship()
"""

FACTORIES = """
from decimal import Decimal

import factory
from factory.alchemy import SQLAlchemyModelFactory

from models import Order, User
from unmocked.integrations.factories import current_session

class BaseFactory(SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = current_session

class UserFactory(BaseFactory):
    class Meta:
        model = User
        sqlalchemy_session_persistence = "commit"

    email = factory.Sequence(lambda n: f"user{n}@example.com")

class OrderFactory(BaseFactory):
    class Meta:
        model = Order
        sqlalchemy_session_persistence = "flush"

    user = factory.SubFactory(UserFactory)
    amount = Decimal("9.99")
"""


@pytest.fixture
def factory_project(user_project: pytest.Pytester) -> pytest.Pytester:
    """The users/orders project of ``user_project``, with SQLAlchemy models and factories."""
    user_project.makepyfile(models=MODELS, factories=FACTORIES)
    return user_project


def test_committed_factory_objects_are_invisible_to_the_next_test(
    factory_project: pytest.Pytester,
) -> None:
    factory_project.makepyfile(
        test_orders="""
        import pytest
        from factories import OrderFactory, UserFactory

        @pytest.mark.parametrize("attempt", range(3))
        def test_creates_and_commits(factory_session, pg, attempt):
            UserFactory(email="same@example.com")  # a unique email: a leak would fail the next
            order = OrderFactory()
            assert order.id is not None and order.user.id is not None
            assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 2
            assert pg.execute("SELECT count(*) FROM orders").fetchone()[0] == 1

        @pytest.mark.parametrize("attempt", range(3))
        def test_sees_no_rows_of_other_tests(pg, attempt):
            assert pg.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        """
    )
    result = factory_project.runpytest("-p", "randomly")
    result.assert_outcomes(passed=6)


@ONE_PROVIDER
def test_factory_session_is_the_tests_sa_session(factory_project: pytest.Pytester) -> None:
    factory_project.makepyfile(
        test_session="""
        from factories import UserFactory
        from models import User

        def test_same_session(factory_session, sa_session):
            user = UserFactory()
            assert factory_session is sa_session
            assert sa_session.get(User, user.id) is user
        """
    )
    factory_project.runpytest().assert_outcomes(passed=1)


@ONE_PROVIDER
def test_rollback_by_the_code_under_test_undoes_only_its_unit_of_work(
    factory_project: pytest.Pytester,
) -> None:
    factory_project.makepyfile(
        test_rollback="""
        from factories import UserFactory
        from models import User

        def test_rollback_after_a_committed_factory(factory_session):
            UserFactory(email="kept@example.com")  # "commit" persistence ends a unit of work
            factory_session.add(User(email="dropped@example.com"))
            factory_session.rollback()
            emails = factory_session.query(User.email).all()
            assert emails == [("kept@example.com",)]
        """
    )
    factory_project.runpytest().assert_outcomes(passed=1)


@ONE_PROVIDER
def test_factories_work_in_async_tests(factory_project: pytest.Pytester) -> None:
    factory_project.makepyfile(
        test_factories_in_async_code="""
        import pytest
        from factories import OrderFactory

        @pytest.mark.asyncio
        async def test_creates_an_order(factory_session, pg):
            OrderFactory()
            assert pg.execute("SELECT count(*) FROM orders").fetchone()[0] == 1
        """
    )
    factory_project.runpytest().assert_outcomes(passed=1)


@ONE_PROVIDER
def test_a_session_over_a_fresh_database_really_commits(factory_project: pytest.Pytester) -> None:
    factory_project.makepyfile(
        test_fresh="""
        import psycopg
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session

        from factories import UserFactory
        from unmocked.integrations.factories import bound_session

        def test_commit_is_seen_by_another_connection(pg_url):
            engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
            with Session(engine) as session, bound_session(session):
                UserFactory(email="real@example.com")
            engine.dispose()
            with psycopg.connect(pg_url) as other:
                assert other.execute("SELECT email FROM users").fetchall() == [
                    ("real@example.com",)
                ]
        """
    )
    factory_project.runpytest().assert_outcomes(passed=1)


@ONE_PROVIDER
def test_factory_used_without_a_bound_session_says_what_to_do(
    factory_project: pytest.Pytester,
) -> None:
    factory_project.makepyfile(
        test_unbound="""
        from factories import UserFactory

        def test_forgot_the_fixture(sa_session):
            UserFactory()
        """
    )
    result = factory_project.runpytest()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E *FixtureError: a factory ran with no session bound: request the factory_session*"]
    )
