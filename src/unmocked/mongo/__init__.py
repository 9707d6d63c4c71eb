"""MongoDB for tests, by the rules unmocked keeps for PostgreSQL: a database of each test's own.

Nothing here imports pymongo until a mongo fixture is used, so a suite without one never loads it.
Its modules:

- :mod:`~unmocked.mongo.sources`: where the server comes from (``UNMOCKED_MONGODB_URL``, a
  ``mongod`` on PATH that :mod:`unmocked.servers.mongod` starts, or the paragraph that says how to
  get one), and the check that pymongo is there;
- :mod:`~unmocked.mongo.databases`: the run's databases, named by
  :func:`unmocked.ownership.run_database_name`, each dropped after its test, and the collection of
  those whose run is no longer alive.
"""
