"""Checks a mock can never give, over the statements tests send to real databases.

- :mod:`~unmocked.checks.recording`: every statement, with the line that sent it;
- :mod:`~unmocked.checks.drivers`: the driver hooks that feed it;
- :mod:`~unmocked.checks.shapes`: a statement without its values, for N+1;
- :mod:`~unmocked.checks.plans`: what a plan says about indexes, on a handful of rows;
- :mod:`~unmocked.checks.explaining`: plans of recorded statements, on unmocked's own connections;
- :mod:`~unmocked.checks.queries`: the ``queries`` fixture's object and its checks;
- :mod:`~unmocked.checks.suite`: the suite-wide checks the ini file asks for;
- :mod:`~unmocked.checks.leaks`: the connections a ``pg_url`` test left open, in one paragraph.
"""

from unmocked.checks.queries import Queries, QueryCheckFailed

__all__ = ["Queries", "QueryCheckFailed"]
