"""
The typed errors of meteord's store and services. Callers (the HTTP layer above all) map these
to answers; no driver exception (sqlite3, psycopg2) ever leaves the store.
"""

from __future__ import annotations


class StoreError(Exception):
    """Something the store could not do."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now (answered 503); retrying later may work."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer meteord than this one."""


class ConstraintViolation(StoreError):
    """A write broke a uniqueness or reference rule of the schema."""


class EntityNotFound(StoreError):
    """An operation named an entity that does not exist."""

    def __init__(self, entity_id: str, what: str = "Entity") -> None:
        super().__init__(f"{what} not found: {entity_id}")
        self.entity_id = entity_id


class NoCameraStatus(StoreError):
    """No camera status is in force for that camera at that time."""


class AuthenticationFailed(StoreError):
    """Unknown user or wrong password; deliberately the same error for both."""


class LastCameraAdmin(StoreError):
    """The change would leave no user with role camera_admin."""
