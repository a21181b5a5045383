"""
The accounts half of `SQLStore`: users and their passwords, export configurations with their
task queue and failure accounting, and the discovery registry. Each method wraps generator
operations run by the driver in one transaction each; password hashing runs on the thread pool
between transactions, never inside one.

Decisions where the specification is silent:

- ``create_or_update_user`` gives ``"none"`` when the user exists and nothing would change:
  no password or the current one (verified, with current hash parameters) and no roles or the
  current ones. A new user needs a non-empty password; its roles default to ``["user"]``.
  Any change that would take the number of ``camera_admin`` users from some to none fails with
  `LastCameraAdmin` (a database without any admin may still gain users without that role).
- A successful ``get_user`` whose stored hash has old parameters stores a new hash.
- ``ensure_initial_admin`` generates 24 URL-safe characters from ``secrets``.
- Export configurations are listed by ``config_id``. Changing a configuration's ``type`` drops
  its tasks of the other kind. Re-enabling a disabled configuration resets its failure
  accounting (count, back-off, reason) and makes its pending tasks due at once, since an
  operator re-enables after fixing the cause.
- Marking inserts tasks oldest entity first, so that claims (by due time, then task id) send
  the oldest first. A claimed task whose entity has been deleted since (a high-water-mark
  rollback) is dropped, not returned.
- The split between task updates and failure accounting: ``complete_export_task`` marks the
  task done, adds its bytes to the configuration's total, sets ``last_success`` and resets the
  consecutive failure count of an enabled configuration (replication.md: any success resets
  it), in one transaction, so a
  success in one process resets a count raised by another; ``fail_export_task`` marks it
  failed and sets the configuration's ``last_error`` too; ``record_export_outcome`` stores
  the count, back-off, enabled flag and reason the exporter's policy decided, optionally only
  if the count and the enabled flag are still those it was decided from (``if_unchanged``),
  so that no success, other failure or operator's change in between is overwritten. A
  success on a disabled configuration (a task in flight when it was disabled) leaves its
  count, which its reason names, until an operator re-enables it and the count starts
  again: a deliberate narrowing of "any success resets the count". ``last_error``/``last_success`` are the most recent ever: an
  outcome's None keeps them.
- ``renew_export_task`` extends only the lease of the claim named by its attempt number, and
  only while it runs: a lease that ran out, or a task claimed again since, is left alone.
- ``release_export_task`` clears the lease and keeps the attempt counted; ``retry_export_tasks``
  clears the failed tasks' errors and keeps their attempt counts. Task operations on an unknown
  task or configuration fail with `EntityNotFound`.
- In the status, ``oldest_pending_ms`` is the time the oldest pending task was queued (ms since
  the epoch, not an age) and ``next_attempt`` the earliest due time of a pending task.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional, Sequence

import attrs
from twisted.internet.defer import Deferred, fail

from meteord.errors import AuthenticationFailed, EntityNotFound, LastCameraAdmin
from meteord.model import (
    ROLES,
    Event,
    EventSearch,
    ExportConfiguration,
    ExportOutcome,
    ExportStatus,
    ExportTask,
    FileRecord,
    FileRecordSearch,
    InvalidEntity,
    User,
    datetime_to_ms,
    ms_to_datetime,
    role_mask,
    roles_from_mask,
)
from meteord.store import _passwords
from meteord.store._records import entities_by_id
from meteord.store._search import EVENTS, FILES, conditions
from meteord.store._sql import Dialect, Operation, Query

_ADMIN_BIT = role_mask(["camera_admin"])

_CONFIG_COLUMNS = (
    "config_id, type, target_url, user_id, password, search, config_name, "
    "config_description, enabled, windows, max_bytes_per_second, priority, ca_file, "
    "pinned_certificates"
)

_NODE_KEYS = ("node_id", "name", "roles", "address", "http_port", "scheme", "version",
              "first_seen", "last_seen", "interval", "status")


class AccountOperations:
    """Users, export configurations and tasks, and nodes: a mixin of `SQLStore`."""

    # users

    def create_or_update_user(self, user_id: str, password: Optional[str],
                              roles: Optional[Iterable[str]]) -> Deferred[str]:
        """Create the user or change its password and roles. -> "create", "update" or "none"."""
        return Deferred.fromCoroutine(self._create_or_update_user(user_id, password, roles))

    async def _create_or_update_user(self, user_id: str, password: Optional[str],
                                     roles: Optional[Iterable[str]]) -> str:
        user = User(user_id=user_id, roles=["user"] if roles is None else roles)
        if password is not None:
            _check_password(password)
        row = await self.run(_select_user, user_id)
        if row is None:
            if password is None:
                raise InvalidEntity("password", "is required for a new user")
            password_hash = await self.in_thread(_passwords.hash_password, password)
            await self.run(_insert_user, user_id, password_hash, user.role_mask)
            return "create"
        old_hash, old_mask = row
        new_hash = None
        if password is not None and not await self.in_thread(_is_current, old_hash, password):
            new_hash = await self.in_thread(_passwords.hash_password, password)
        new_mask = None if roles is None or user.role_mask == old_mask else user.role_mask
        if new_hash is None and new_mask is None:
            return "none"
        await self.run(_update_user, user_id, new_hash, new_mask)
        return "update"

    def get_user(self, user_id: str, password: str) -> Deferred[User]:
        """The user with these credentials; AuthenticationFailed for any mismatch."""
        return Deferred.fromCoroutine(self._get_user(user_id, password))

    async def _get_user(self, user_id: str, password: str) -> User:
        row = await self.run(_select_user, user_id) if isinstance(user_id, str) else None
        stored_hash = None if row is None else row[0]
        verified, rehash = await self.in_thread(_verify, stored_hash, password)
        if not verified or row is None:
            raise AuthenticationFailed("unknown user or wrong password")
        if rehash:
            new_hash = await self.in_thread(_passwords.hash_password, password)
            await self.run(_replace_hash, user_id, stored_hash, new_hash)
        return User(user_id=user_id, roles=roles_from_mask(row[1]))

    def get_users(self) -> Deferred[list[User]]:
        """Every user, sorted by user_id."""
        return self.run(_select_users)

    def set_user_roles(self, user_id: str, roles: Iterable[str]) -> Deferred[User]:
        """Replace a user's roles; EntityNotFound or LastCameraAdmin when it cannot be done."""
        return self.set_roles({user_id: roles}).addCallback(lambda users: users[0])

    def set_roles(self, roles_by_user: Mapping[str, Iterable[str]]) -> Deferred[list[User]]:
        """
        Replace the roles of several users in one transaction, the camera_admin check made
        once at its end (so two users can swap the role): all are changed, or, with
        EntityNotFound or LastCameraAdmin, none.
        """
        return Deferred.fromCoroutine(self._set_roles(roles_by_user))

    async def _set_roles(self, roles_by_user: Mapping[str, Iterable[str]]) -> list[User]:
        users = [User(user_id=user_id, roles=roles) for user_id, roles in roles_by_user.items()]
        await self.run(_update_roles, [(user.user_id, user.role_mask) for user in users])
        return users

    def delete_user(self, user_id: str) -> Deferred[bool]:
        """Delete a user (whether one was deleted); never the last camera_admin."""
        return self.run(_delete_user, user_id)

    def ensure_initial_admin(self) -> Deferred[Optional[str]]:
        """
        When there is no user at all, create ``admin`` with every role and a random password
        and give that password (to show the operator once); otherwise give None.
        """
        return Deferred.fromCoroutine(self._ensure_initial_admin())

    async def _ensure_initial_admin(self) -> Optional[str]:
        if await self.run(_count_users):
            return None
        password = _passwords.new_password()
        password_hash = await self.in_thread(_passwords.hash_password, password)
        created = await self.run(_insert_first_user, "admin", password_hash, role_mask(ROLES))
        return password if created else None

    # export configurations

    def create_or_update_export_configuration(
        self, config: ExportConfiguration
    ) -> Deferred[ExportConfiguration]:
        """Upsert by config_id (an empty password keeps the stored one); give what is stored."""
        return self.run(_upsert_config, _config_values(config), self.now_ms())

    def get_export_configuration(self, config_id: str) -> Deferred[Optional[ExportConfiguration]]:
        """The configuration with its password (for the exporter), or None."""
        return self.run(_select_config, config_id)

    def get_export_configurations(self) -> Deferred[list[ExportConfiguration]]:
        """Every configuration with its password, sorted by config_id."""
        return self.run(_select_configs)

    def delete_export_configuration(self, config_id: str) -> Deferred[bool]:
        """Delete a configuration and its tasks; whether it existed."""
        return self.run(_delete_config, config_id)

    # export tasks

    def mark_entities_to_export(self, config: ExportConfiguration) -> Deferred[int]:
        """
        Queue every entity matching the configuration's search that has no task for it yet
        (limit and skip ignored; file exports take stand-alone files only). -> rows added
        """
        search: Any = attrs.evolve(config.search, exclude_export_to=config.config_id,
                                   limit=0, skip=0)
        if isinstance(search, FileRecordSearch):
            search = attrs.evolve(search, exclude_events=True)
        where, params = conditions(search)
        return self.run(_mark, config.config_id, config.type, where, tuple(params), self.now_ms())

    def claim_export_tasks(self, config_id: str, limit: int,
                           lease_seconds: float) -> Deferred[list[ExportTask]]:
        """Lease up to ``limit`` due pending tasks, oldest first, with their entities loaded."""
        return Deferred.fromCoroutine(self._claim_export_tasks(config_id, limit, lease_seconds))

    async def _claim_export_tasks(self, config_id: str, limit: int, lease_seconds: float,
                                  completed: Optional[tuple[int, int]] = None
                                  ) -> list[ExportTask]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError("limit must be a positive integer")
        if completed is not None:
            _check_bytes_sent(completed[1])
        now = self.now_ms()
        claimed = await self.run(_claim_with_entities, self.dialect, config_id, limit, now,
                                 now + int(lease_seconds * 1000), completed)
        return [ExportTask(task_id=task_id, config_id=config_id, kind=kind, entity=entity,
                           attempts=attempts)
                for task_id, kind, entity, attempts in claimed]

    def complete_export_task(self, task_id: int, bytes_sent: int = 0) -> Deferred[None]:
        """
        Mark a task done, add its bytes to the configuration's total, note the success and
        reset the configuration's consecutive failures.
        """
        try:
            _check_bytes_sent(bytes_sent)
        except ValueError:
            return fail()
        return self.run(_complete_task, task_id, bytes_sent, self.now_ms())

    def complete_and_claim_export_tasks(self, task_id: int, bytes_sent: int, config_id: str,
                                        limit: int, lease_seconds: float
                                        ) -> Deferred[list[ExportTask]]:
        """
        `complete_export_task` and `claim_export_tasks` in one transaction: a worker done
        with one task takes its next in one trip to the database. Neither happens if either
        fails.
        """
        return Deferred.fromCoroutine(self._claim_export_tasks(
            config_id, limit, lease_seconds, completed=(task_id, bytes_sent)))

    def fail_export_task(self, task_id: int, reason: str) -> Deferred[None]:
        """Mark a task failed with its reason (an entity failure)."""
        return self.run(_fail_task, task_id, reason)

    def release_export_task(self, task_id: int) -> Deferred[None]:
        """Give a leased task back, still pending and due (transport failure)."""
        return self.run(_release_task, task_id)

    def renew_export_task(self, task_id: int, attempt: int,
                          lease_seconds: float) -> Deferred[bool]:
        """
        Extend the lease of claim number ``attempt`` of a pending task (its ``attempts`` when
        claimed) to ``lease_seconds`` from now, if it has not run out; whether it was extended.
        """
        now = self.now_ms()
        return self.run(_renew_task, task_id, attempt, now, now + int(lease_seconds * 1000))

    def defer_export_tasks(self, config_id: str, seconds: float) -> Deferred[int]:
        """Make every pending task of a configuration due ``seconds`` from now. -> tasks moved"""
        return self.run(_defer_tasks, config_id, self.now_ms() + int(seconds * 1000))

    def retry_export_tasks(self, config_id: str) -> Deferred[int]:
        """Failed tasks of a configuration become pending and due now. -> tasks moved"""
        return self.run(_retry_tasks, config_id, self.now_ms())

    def record_export_outcome(self, config_id: str, outcome: ExportOutcome,
                              if_unchanged: Optional[ExportOutcome] = None) -> Deferred[bool]:
        """
        Store a configuration's failure accounting; with ``if_unchanged`` (the accounting it
        was decided from), only if the stored count and enabled flag are still its. Whether
        it was stored.
        """
        return self.run(_record_outcome, config_id, outcome, if_unchanged)

    def get_export_status(self, config_id: str) -> Deferred[Optional[ExportStatus]]:
        """Task counts and failure accounting of a configuration, or None."""
        return self.run(_select_status, config_id)

    # discovery registry

    def save_node(self, node: dict[str, Any]) -> Deferred[None]:
        """Insert or update a registry entry (the dict of discovery.md, with ``interval``)."""
        try:
            values = [node[key] for key in _NODE_KEYS]
        except KeyError as e:
            return fail(InvalidEntity(e.args[0], "is required"))
        values[2] = json.dumps(list(values[2]))
        return self.run(_save_node, tuple(values))

    def load_nodes(self) -> Deferred[list[dict[str, Any]]]:
        """Every registry entry, sorted by node_id."""
        return self.run(_load_nodes)


# --- password work (runs on the thread pool)


def _check_password(password: object) -> None:
    if not isinstance(password, str) or not password:
        raise InvalidEntity("password", "must be a non-empty string")
    if "\x00" in password:
        raise InvalidEntity("password", "must not contain NUL characters")


def _is_current(password_hash: str, password: str) -> bool:
    """Whether password is the stored one, hashed with the current parameters."""
    return _passwords.verify_password(password_hash, password) and not _passwords.needs_rehash(
        password_hash)


def _verify(password_hash: Optional[str], password: object) -> tuple[bool, bool]:
    """
    (verified, needs rehash). With no stored hash, a dummy one is verified so that unknown
    users take as long as wrong passwords.
    """
    if not isinstance(password, str):
        password = ""
    if password_hash is None:
        _passwords.verify_password(_passwords.dummy_hash(), password)
        return False, False
    if not _passwords.verify_password(password_hash, password):
        return False, False
    return True, _passwords.needs_rehash(password_hash)


# --- user operations


def _select_user(user_id: str) -> Operation[Optional[tuple[str, int]]]:
    rows = yield Query("SELECT password_hash, role_mask FROM users WHERE user_id = ?", (user_id,))
    return (rows[0][0], rows[0][1]) if rows else None


def _select_users() -> Operation[list[User]]:
    rows = yield Query("SELECT user_id, role_mask FROM users ORDER BY user_id")
    return [User(user_id=user_id, roles=roles_from_mask(mask)) for user_id, mask in rows]


def _count_users() -> Operation[int]:
    rows = yield Query("SELECT count(*) FROM users")
    return rows[0][0]


def _count_admins() -> Operation[int]:
    rows = yield Query("SELECT count(*) FROM users WHERE (role_mask & ?) <> 0", (_ADMIN_BIT,))
    return rows[0][0]


def _insert_user(user_id: str, password_hash: str, mask: int) -> Operation[None]:
    yield Query("INSERT INTO users (user_id, password_hash, role_mask) VALUES (?, ?, ?)",
                (user_id, password_hash, mask))


def _insert_first_user(user_id: str, password_hash: str, mask: int) -> Operation[bool]:
    """Insert the user only if the table is still empty; whether it was inserted."""
    result = yield Query(
        "INSERT INTO users (user_id, password_hash, role_mask) "
        "SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM users)",
        (user_id, password_hash, mask))
    return result.rowcount == 1


def _update_user(user_id: str, password_hash: Optional[str],
                 mask: Optional[int]) -> Operation[None]:
    admins_before = yield from _count_admins()
    if password_hash is not None:
        result = yield Query("UPDATE users SET password_hash = ? WHERE user_id = ?",
                             (password_hash, user_id))
        if result.rowcount == 0:
            raise EntityNotFound(user_id, "User")
    if mask is not None:
        yield from _set_role_masks([(user_id, mask)])
    yield from _keep_an_admin(admins_before)


def _update_roles(masks: Sequence[tuple[str, int]]) -> Operation[None]:
    admins_before = yield from _count_admins()
    yield from _set_role_masks(masks)
    yield from _keep_an_admin(admins_before)


def _set_role_masks(masks: Sequence[tuple[str, int]]) -> Operation[None]:
    """Each (user_id, role mask); EntityNotFound for a user that does not exist."""
    for user_id, mask in masks:
        result = yield Query("UPDATE users SET role_mask = ? WHERE user_id = ?", (mask, user_id))
        if result.rowcount == 0:
            raise EntityNotFound(user_id, "User")


def _keep_an_admin(admins_before: int) -> Operation[None]:
    """Fail (rolling the transaction back) if the last camera_admin has just gone."""
    admins_after = yield from _count_admins()
    if admins_before and not admins_after:
        raise LastCameraAdmin("The change would leave no user with role camera_admin")


def _replace_hash(user_id: str, old_hash: str, new_hash: str) -> Operation[None]:
    yield Query("UPDATE users SET password_hash = ? WHERE user_id = ? AND password_hash = ?",
                (new_hash, user_id, old_hash))


def _delete_user(user_id: str) -> Operation[bool]:
    admins_before = yield from _count_admins()
    result = yield Query("DELETE FROM users WHERE user_id = ?", (user_id,))
    yield from _keep_an_admin(admins_before)
    return result.rowcount > 0


# --- export configuration operations


def _config_values(config: ExportConfiguration) -> tuple:
    """The column values of a configuration, in the order of _CONFIG_COLUMNS."""
    return (
        config.config_id,
        config.type,
        config.target_url,
        config.user_id,
        config.password,
        json.dumps(config.search.to_dict(), sort_keys=True),
        config.config_name,
        config.config_description,
        config.enabled,
        None if config.window is None else json.dumps([str(w) for w in config.window]),
        config.max_bytes_per_second,
        config.priority,
        config.ca_file,
        None if config.pinned_certificates is None else json.dumps(config.pinned_certificates),
    )


def _config_from_row(row: tuple) -> ExportConfiguration:
    (config_id, export_type, target_url, user_id, password, search, name, description, enabled,
     windows, max_bytes_per_second, priority, ca_file, pinned_certificates) = row
    search_class = EventSearch if export_type == "event" else FileRecordSearch
    return ExportConfiguration(
        config_id=config_id,
        type=export_type,
        target_url=target_url,
        user_id=user_id,
        password=password,
        search=search_class.from_dict(json.loads(search), max_limit=None),
        config_name=name,
        config_description=description,
        enabled=bool(enabled),
        window=None if windows is None else json.loads(windows),
        max_bytes_per_second=max_bytes_per_second,
        priority=priority,
        ca_file=ca_file,
        pinned_certificates=(None if pinned_certificates is None
                             else json.loads(pinned_certificates)),
    )


def _config_pk(config_id: str) -> Operation[int]:
    """The row id of a configuration; EntityNotFound if there is none."""
    rows = yield Query("SELECT id FROM export_configs WHERE config_id = ?", (config_id,))
    if not rows:
        raise EntityNotFound(config_id, "Export configuration")
    return rows[0][0]


def _upsert_config(values: tuple, now: int) -> Operation[ExportConfiguration]:
    config_id, export_type, password, enabled = values[0], values[1], values[4], values[8]
    rows = yield Query("SELECT id, type, enabled FROM export_configs WHERE config_id = ?",
                       (config_id,))
    if not rows:
        marks = ", ".join("?" * len(values))
        yield Query(f"INSERT INTO export_configs ({_CONFIG_COLUMNS}) VALUES ({marks})", values)
    else:
        config_pk, old_type, was_enabled = rows[0]
        yield Query(
            "UPDATE export_configs SET type = ?, target_url = ?, user_id = ?, "
            "password = CASE WHEN ? = '' THEN password ELSE ? END, search = ?, "
            "config_name = ?, config_description = ?, enabled = ?, windows = ?, "
            "max_bytes_per_second = ?, priority = ?, ca_file = ?, pinned_certificates = ? "
            "WHERE id = ?",
            (export_type, values[2], values[3], password, password, *values[5:], config_pk))
        if export_type != old_type:
            yield Query("DELETE FROM export_tasks WHERE config_pk = ? AND entity_kind <> ?",
                        (config_pk, export_type))
        if enabled and not was_enabled:
            yield Query(
                "UPDATE export_configs SET consecutive_failures = 0, deferred_until = NULL, "
                "disabled_reason = NULL WHERE id = ?", (config_pk,))
            yield Query(
                "UPDATE export_tasks SET due_time = ? "
                "WHERE config_pk = ? AND state = 'pending' AND due_time > ?",
                (now, config_pk, now))
    stored = yield from _select_config(config_id)
    assert stored is not None
    return stored


def _select_config(config_id: str) -> Operation[Optional[ExportConfiguration]]:
    rows = yield Query(f"SELECT {_CONFIG_COLUMNS} FROM export_configs WHERE config_id = ?",
                       (config_id,))
    return _config_from_row(rows[0]) if rows else None


def _select_configs() -> Operation[list[ExportConfiguration]]:
    rows = yield Query(f"SELECT {_CONFIG_COLUMNS} FROM export_configs ORDER BY config_id")
    return [_config_from_row(row) for row in rows]


def _delete_config(config_id: str) -> Operation[bool]:
    yield Query(
        "DELETE FROM export_tasks WHERE config_pk IN "
        "(SELECT id FROM export_configs WHERE config_id = ?)", (config_id,))
    result = yield Query("DELETE FROM export_configs WHERE config_id = ?", (config_id,))
    return result.rowcount > 0


def _record_outcome(config_id: str, outcome: ExportOutcome,
                    if_unchanged: Optional[ExportOutcome]) -> Operation[bool]:
    condition, expected = ("", ()) if if_unchanged is None else (
        " AND consecutive_failures = ? AND enabled = ?",
        (if_unchanged.consecutive_failures, if_unchanged.enabled))
    result = yield Query(
        "UPDATE export_configs SET consecutive_failures = ?, deferred_until = ?, enabled = ?, "
        "disabled_reason = ?, last_error = COALESCE(?, last_error), "
        "last_success = COALESCE(?, last_success) WHERE config_id = ?" + condition,
        (outcome.consecutive_failures, _ms(outcome.deferred_until), outcome.enabled,
         outcome.disabled_reason, outcome.last_error, _ms(outcome.last_success), config_id,
         *expected))
    if result.rowcount == 0 and if_unchanged is None:
        raise EntityNotFound(config_id, "Export configuration")
    return result.rowcount == 1


def _select_status(config_id: str) -> Operation[Optional[ExportStatus]]:
    rows = yield Query(
        "SELECT id, enabled, consecutive_failures, deferred_until, disabled_reason, "
        "last_success, last_error, bytes_sent FROM export_configs WHERE config_id = ?",
        (config_id,))
    if not rows:
        return None
    (config_pk, enabled, failures, deferred_until, disabled_reason, last_success, last_error,
     bytes_sent) = rows[0]
    counts = yield Query(
        "SELECT state, count(*), min(created), min(due_time) FROM export_tasks "
        "WHERE config_pk = ? GROUP BY state", (config_pk,))
    by_state = {state: (count, created, due) for state, count, created, due in counts}
    pending = by_state.get("pending", (0, None, None))
    return ExportStatus(
        config_id=config_id,
        enabled=bool(enabled),
        pending=pending[0],
        done=by_state.get("done", (0,))[0],
        failed=by_state.get("failed", (0,))[0],
        oldest_pending=_datetime(pending[1]),
        consecutive_failures=failures,
        last_success=_datetime(last_success),
        last_error=last_error,
        next_attempt=_datetime(pending[2]),
        bytes_sent=bytes_sent,
        disabled_reason=disabled_reason,
        deferred_until=_datetime(deferred_until),
    )


# --- export task operations


def _mark(config_id: str, kind: str, where: str, params: tuple, now: int) -> Operation[int]:
    """
    Insert a pending task for every entity matching the search conditions ``where`` (written
    against ``events e`` or ``files f``), oldest first so that task ids follow entity time.
    """
    config_pk = yield from _config_pk(config_id)
    t = EVENTS if kind == "event" else FILES
    result = yield Query(
        "INSERT INTO export_tasks (config_pk, entity_kind, entity_pk, state, due_time, "
        "attempts, created) "
        f"SELECT ?, ?, {t.column('id')}, 'pending', ?, 0, ? FROM {t.table} {t.alias} "
        f"WHERE {where} ORDER BY {t.column(t.time)}, {t.column('id')} "
        "ON CONFLICT (config_pk, entity_kind, entity_pk) DO NOTHING",
        (config_pk, kind, now, now, *params))
    return result.rowcount


def _claim(dialect: Dialect, config_id: str, limit: int, now: int,
           lease_until: int) -> Operation[list[tuple[int, str, str, int]]]:
    """
    Lease due pending tasks; give (task_id, kind, public entity id, attempts) for each whose
    entity still exists, dropping the tasks of entities deleted since they were queued.
    """
    config_pk = yield from _config_pk(config_id)
    rows = yield Query(
        "SELECT id, entity_kind, entity_pk, attempts FROM export_tasks "
        "WHERE config_pk = ? AND state = 'pending' AND due_time <= ? "
        "AND (lease_until IS NULL OR lease_until <= ?) "
        "ORDER BY due_time, id LIMIT ?" + dialect.skip_locked,
        (config_pk, now, now, limit))
    if not rows:
        return []
    yield Query(
        f"UPDATE export_tasks SET lease_until = ?, attempts = attempts + 1 "
        f"WHERE id IN ({_marks(rows)})", (lease_until, *(row[0] for row in rows)))
    public_ids: dict[tuple[str, int], str] = {}
    for kind, table, id_column in (("event", "events", "event_id"), ("file", "files", "file_id")):
        pks = [row[2] for row in rows if row[1] == kind]
        if pks:
            found = yield Query(
                f"SELECT id, {id_column} FROM {table} WHERE id IN ({_marks(pks)})", pks)
            public_ids.update(((kind, pk), public_id) for pk, public_id in found)
    vanished = [row[0] for row in rows if (row[1], row[2]) not in public_ids]
    if vanished:
        yield from _delete_tasks(vanished)
    return [(task_id, kind, public_ids[kind, pk], attempts + 1)
            for task_id, kind, pk, attempts in rows if (kind, pk) in public_ids]


def _check_bytes_sent(bytes_sent: object) -> None:
    if isinstance(bytes_sent, bool) or not isinstance(bytes_sent, int) or bytes_sent < 0:
        raise ValueError("bytes_sent must be a non-negative integer")


def _claim_with_entities(dialect: Dialect, config_id: str, limit: int, now: int, lease_until: int,
                         completed: Optional[tuple[int, int]] = None
                         ) -> Operation[list[tuple[int, str, Event | FileRecord, int]]]:
    """
    `_claim`, giving each task's entity read in the same transaction (so a claim of many tasks
    is one trip to the database, not one per task); with ``completed`` (a task id and its bytes
    sent), that task is marked done too: first, so that the claim cannot take it again even
    if its lease has run out, and its success counted on the configuration's row last, so
    that the row is locked for as short a time as may be.
    """
    if completed is not None:
        yield from _mark_done(completed[0])
    claimed = yield from _claim(dialect, config_id, limit, now, lease_until)
    entities = yield from entities_by_id([(kind, entity_id) for _, kind, entity_id, _ in claimed])
    # On PostgreSQL each statement sees what is committed when it starts, so an entity found
    # by the claim can still be gone when it is read.
    vanished = [task_id for task_id, kind, entity_id, _ in claimed
                if (kind, entity_id) not in entities]
    if vanished:
        yield from _delete_tasks(vanished)
    if completed is not None:
        yield from _count_success(*completed, now)
    return [(task_id, kind, entities[kind, entity_id], attempts)
            for task_id, kind, entity_id, attempts in claimed if (kind, entity_id) in entities]


def _delete_tasks(task_ids: list[int]) -> Operation[None]:
    yield Query(f"DELETE FROM export_tasks WHERE id IN ({_marks(task_ids)})", task_ids)


def _complete_task(task_id: int, bytes_sent: int, now: int) -> Operation[None]:
    yield from _mark_done(task_id)
    yield from _count_success(task_id, bytes_sent, now)


def _mark_done(task_id: int) -> Operation[None]:
    result = yield Query(
        "UPDATE export_tasks SET state = 'done', lease_until = NULL, last_error = NULL "
        "WHERE id = ?", (task_id,))
    if result.rowcount == 0:
        raise EntityNotFound(str(task_id), "Export task")


def _count_success(task_id: int, bytes_sent: int, now: int) -> Operation[None]:
    """
    Add a done task's bytes and time to its configuration's totals; reset its failures if it
    is enabled.
    """
    yield Query(
        "UPDATE export_configs SET bytes_sent = bytes_sent + ?, last_success = ?, "
        "consecutive_failures = CASE WHEN enabled THEN 0 ELSE consecutive_failures END "
        "WHERE id = (SELECT config_pk FROM export_tasks WHERE id = ?)",
        (bytes_sent, now, task_id))


def _fail_task(task_id: int, reason: str) -> Operation[None]:
    result = yield Query(
        "UPDATE export_tasks SET state = 'failed', lease_until = NULL, last_error = ? "
        "WHERE id = ?", (reason, task_id))
    if result.rowcount == 0:
        raise EntityNotFound(str(task_id), "Export task")
    yield Query(
        "UPDATE export_configs SET last_error = ? "
        "WHERE id = (SELECT config_pk FROM export_tasks WHERE id = ?)", (reason, task_id))


def _release_task(task_id: int) -> Operation[None]:
    result = yield Query("UPDATE export_tasks SET lease_until = NULL WHERE id = ?", (task_id,))
    if result.rowcount == 0:
        raise EntityNotFound(str(task_id), "Export task")


def _renew_task(task_id: int, attempt: int, now: int, lease_until: int) -> Operation[bool]:
    result = yield Query(
        "UPDATE export_tasks SET lease_until = ? "
        "WHERE id = ? AND attempts = ? AND lease_until > ?",
        (lease_until, task_id, attempt, now))
    return result.rowcount == 1


def _defer_tasks(config_id: str, due_time: int) -> Operation[int]:
    config_pk = yield from _config_pk(config_id)
    result = yield Query(
        "UPDATE export_tasks SET due_time = ? WHERE config_pk = ? AND state = 'pending'",
        (due_time, config_pk))
    return result.rowcount


def _retry_tasks(config_id: str, now: int) -> Operation[int]:
    config_pk = yield from _config_pk(config_id)
    result = yield Query(
        "UPDATE export_tasks SET state = 'pending', due_time = ?, lease_until = NULL, "
        "last_error = NULL WHERE config_pk = ? AND state = 'failed'", (now, config_pk))
    return result.rowcount


# --- discovery registry operations


def _save_node(values: tuple) -> Operation[None]:
    updates = ", ".join(f"{key} = excluded.{key}" for key in _NODE_KEYS[1:])
    yield Query(
        f"INSERT INTO nodes ({', '.join(_NODE_KEYS)}) VALUES ({_marks(_NODE_KEYS)}) "
        f"ON CONFLICT (node_id) DO UPDATE SET {updates}", values)


def _load_nodes() -> Operation[list[dict[str, Any]]]:
    rows = yield Query(f"SELECT {', '.join(_NODE_KEYS)} FROM nodes ORDER BY node_id")
    nodes = []
    for row in rows:
        node = dict(zip(_NODE_KEYS, row))
        node["roles"] = json.loads(node["roles"])
        node["interval"] = float(node["interval"])
        nodes.append(node)
    return nodes


# --- helpers


def _marks(items: Any) -> str:
    """One ``?`` placeholder per item, comma-separated, for ``IN (...)`` lists."""
    return ", ".join("?" * len(items))


def _ms(value: Optional[datetime]) -> Optional[int]:
    return None if value is None else datetime_to_ms(value)


def _datetime(ms: Optional[int]) -> Optional[datetime]:
    return None if ms is None else ms_to_datetime(ms)
