"""
The PostgreSQL side of the test suite: a mixin that gives each test a fresh database on the
run's shared throwaway cluster, skipping with the reason when PostgreSQL is missing (or
failing, when ``METEORD_TEST_POSTGRES=required``).
"""

from __future__ import annotations

from twisted.trial.unittest import SkipTest

from meteord.testing.postgres import PostgresCluster, PostgresUnavailable, required, shared_cluster


def postgres_cluster() -> PostgresCluster:
    """The shared cluster, or SkipTest (or failure when required) with the reason."""
    try:
        return shared_cluster()
    except PostgresUnavailable as e:
        if required():
            raise
        raise SkipTest(f"PostgreSQL tests skipped: {e}") from None


def fresh_postgres_url() -> str:
    """A URL of a new, empty database on the shared cluster."""
    return postgres_cluster().create_database()
