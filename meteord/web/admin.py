"""
The admin API: users and their roles, export configurations (with write-only passwords), their
status and retries, and the operator-set fields of camera status. Role ``camera_admin`` on
every route except ``GET /login`` (role ``user``). Every change to a user makes the
authenticator forget that user's cached logins.

Decisions where the specification is silent:

- ``POST /users`` needs ``user_id`` and a non-empty ``password`` (at most 1024 characters, to
  bound hashing); ``roles``, when given, replace the user's roles, when absent a new user gets
  ``["user"]`` and an existing one keeps theirs.
- ``PUT /users/roles`` checks every entry (known users, known roles, at least one
  ``camera_admin`` left) before changing anything, so a bad entry changes nothing.
- Deleting an unknown user is a 404.
- ``POST /export`` needs ``type``, ``target_url``, ``user_id``, a non-empty ``password`` and
  ``name``; ``description`` defaults to ``""``. Errors name these request keys.
- ``PUT /export/{config_id}`` of an unknown configuration is a 404 (it does not create one);
  a body without ``config_id`` takes the URL's. A ``ca_file`` that cannot be read or holds no
  PEM certificate is a 400 naming ``ca_file``, checked as the exporter will read it. ``POST
  /export`` takes only the keys above, so meteord's own keys (``window``, ``ca_file``, ...) are
  set with ``PUT``, as the search must be before an export does anything.
- ``POST /export/{config_id}/retry`` answers ``{"message": "Okay", "retried": n}``.
- ``POST /cameras/{camera_id}/status``: keys absent (or null) keep the current value; the new
  status is valid from now by this API's clock.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from meteord.errors import EntityNotFound
from meteord.model import (
    CameraStatus,
    EventSearch,
    ExportConfiguration,
    FileRecordSearch,
    InvalidEntity,
    User,
    ms_to_datetime,
    new_id,
    parse_camera_id,
    parse_id,
)
from meteord.web._body import read_json_body
from meteord.web.auth import Authenticator
from meteord.web.errors import entity_not_found, install_error_handlers
from meteord.web.responses import write_json

__all__ = ["AdminAPI"]

MAX_PASSWORD_LENGTH = 1024


def _object(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidEntity("", "expected a JSON object")
    return value


def _password(body: Mapping[str, Any]) -> str:
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise InvalidEntity("password", "must be a non-empty string")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidEntity("password", f"must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


def _user(user_id: object, roles: object, key: str = "") -> User:
    """A User from request values, errors named under ``key``."""
    try:
        if roles is not None and not isinstance(roles, list):
            raise InvalidEntity("roles", "expected a list of roles")
        return User.from_dict({"user_id": user_id, "roles": [] if roles is None else roles})
    except InvalidEntity as e:
        raise (e.within(key) if key else e) from None


async def _check_ca_file(config: ExportConfiguration) -> None:
    """Refuse a ``ca_file`` the exporter could not use, before it is stored (read in a thread)."""
    if config.ca_file is None:
        return
    # Imported only when needed: a node without the exporter does not load meteord.exporter.
    from meteord.exporter.tls import CAFileUnreadable, load_trust_root

    try:
        await deferToThread(load_trust_root, config.ca_file)
    except CAFileUnreadable as e:
        raise InvalidEntity("ca_file", str(e)) from None


async def _users_body(store: Any) -> dict[str, Any]:
    return {"users": [user.to_dict() for user in await store.get_users()]}


class AdminAPI:
    """
    The admin routes over ``store`` (an IMeteorStore); ``auth`` checks roles and is told about
    user changes; ``clock`` gives "now" for new camera statuses.
    """

    app = Klein()
    install_error_handlers(app)

    def __init__(self, store: Any, auth: Authenticator, clock: IReactorTime) -> None:
        self._store = store
        self._auth = auth
        self._clock = clock

    async def _admin(self, request: IRequest) -> User:
        return await self._auth.require(request, "camera_admin")

    # users

    @app.route("/login", methods=["GET"])
    async def login(self, request: IRequest) -> bytes:
        user = await self._auth.require(request, "user")
        return write_json(request, 200, {"user": user.to_dict()})

    @app.route("/users", methods=["GET"])
    async def list_users(self, request: IRequest) -> bytes:
        await self._admin(request)
        return write_json(request, 200, await _users_body(self._store))

    @app.route("/users", methods=["POST"])
    async def create_or_update_user(self, request: IRequest) -> bytes:
        await self._admin(request)
        body = _object(read_json_body(request))
        roles = body.get("roles")
        user = _user(body.get("user_id"), roles)
        password = _password(body)
        await self._store.create_or_update_user(
            user.user_id, password, None if roles is None else sorted(user.roles))
        self._auth.forget(user.user_id)
        return write_json(request, 200, await _users_body(self._store))

    @app.route("/users/roles", methods=["PUT"])
    async def set_user_roles(self, request: IRequest) -> bytes:
        await self._admin(request)
        body = _object(read_json_body(request))
        entries = body.get("new_roles")
        if not isinstance(entries, list):
            raise InvalidEntity("new_roles", "expected a list of {user_id, roles}")
        changes: dict[str, User] = {}
        for index, entry in enumerate(entries):
            key = f"new_roles[{index}]"
            if not isinstance(entry, dict):
                raise InvalidEntity(key, "expected an object with user_id and roles")
            if entry.get("roles") is None:
                raise InvalidEntity(f"{key}.roles", "is required")
            user = _user(entry.get("user_id"), entry.get("roles"), key)
            changes[user.user_id] = user
        known = {user.user_id for user in await self._store.get_users()}
        for index, entry in enumerate(entries):
            if entry["user_id"] not in known:
                raise InvalidEntity(f"new_roles[{index}].user_id", "no such user")
        try:
            await self._store.set_roles(
                {user.user_id: sorted(user.roles) for user in changes.values()})
        finally:
            for user_id in changes:
                self._auth.forget(user_id)
        return write_json(request, 200, await _users_body(self._store))

    @app.route("/users/<user_id>", methods=["DELETE"])
    async def delete_user(self, request: IRequest, user_id: str) -> bytes:
        await self._admin(request)
        try:
            deleted = await self._store.delete_user(user_id)
        finally:
            self._auth.forget(user_id)
        if not deleted:
            raise entity_not_found(user_id)
        return write_json(request, 200, await _users_body(self._store))

    # export configurations

    async def _config(self, config_id: str) -> ExportConfiguration:
        config_id = parse_id(config_id, "config_id")
        config = await self._store.get_export_configuration(config_id)
        if config is None:
            raise entity_not_found(config_id)
        return config

    @app.route("/export", methods=["GET"])
    async def list_export_configurations(self, request: IRequest) -> bytes:
        await self._admin(request)
        configs = await self._store.get_export_configurations()
        return write_json(request, 200, {"configs": [config.to_dict() for config in configs]})

    @app.route("/export/<config_id>", methods=["GET"])
    async def get_export_configuration(self, request: IRequest, config_id: str) -> bytes:
        await self._admin(request)
        config = await self._config(config_id)
        return write_json(request, 200, {"config": config.to_dict()})

    @app.route("/export", methods=["POST"])
    async def create_export_configuration(self, request: IRequest) -> bytes:
        await self._admin(request)
        body = _object(read_json_body(request))
        password = _password(body)
        export_type = body.get("type")
        if export_type not in ("event", "file"):
            raise InvalidEntity("type", "must be 'event' or 'file'")
        search = EventSearch() if export_type == "event" else FileRecordSearch()
        description = body.get("description")
        wire = {
            "config_id": new_id(), "type": export_type, "target_url": body.get("target_url"),
            "user_id": body.get("user_id"), "password": password, "search": search.to_dict(),
            "config_name": body.get("name"),
            "config_description": "" if description is None else description,
            "enabled": False,
        }
        try:
            config = ExportConfiguration.from_dict(wire)
        except InvalidEntity as e:
            renamed = {"config_name": "name", "config_description": "description"}
            raise InvalidEntity(renamed.get(e.key, e.key), e.reason) from None
        stored = await self._store.create_or_update_export_configuration(config)
        return write_json(request, 200, {"config": stored.to_dict()})

    @app.route("/export/<config_id>", methods=["PUT"])
    async def update_export_configuration(self, request: IRequest, config_id: str) -> bytes:
        await self._admin(request)
        config_id = parse_id(config_id, "config_id")
        body = dict(_object(read_json_body(request)))
        if body.get("config_id") is None:
            body["config_id"] = config_id
        elif parse_id(body["config_id"], "config_id") != config_id:
            raise InvalidEntity("config_id", "differs from the configuration named in the URL")
        config = ExportConfiguration.from_dict(body)
        await self._config(config_id)
        await _check_ca_file(config)
        stored = await self._store.create_or_update_export_configuration(config)
        return write_json(request, 200, {"config": stored.to_dict()})

    @app.route("/export/<config_id>", methods=["DELETE"])
    async def delete_export_configuration(self, request: IRequest, config_id: str) -> bytes:
        await self._admin(request)
        config_id = parse_id(config_id, "config_id")
        if not await self._store.delete_export_configuration(config_id):
            raise entity_not_found(config_id)
        return write_json(request, 200, {"message": "Okay"})

    @app.route("/export/<config_id>/status", methods=["GET"])
    async def export_status(self, request: IRequest, config_id: str) -> bytes:
        await self._admin(request)
        config_id = parse_id(config_id, "config_id")
        status = await self._store.get_export_status(config_id)
        if status is None:
            raise entity_not_found(config_id)
        return write_json(request, 200, {"status": status.to_dict()})

    @app.route("/export/<config_id>/retry", methods=["POST"])
    async def retry_export(self, request: IRequest, config_id: str) -> bytes:
        await self._admin(request)
        config = await self._config(config_id)
        try:
            retried = await self._store.retry_export_tasks(config.config_id)
        except EntityNotFound:
            raise entity_not_found(config.config_id) from None
        return write_json(request, 200, {"message": "Okay", "retried": retried})

    # cameras

    @app.route("/cameras/<camera_id>/status", methods=["POST"])
    async def update_camera_status(self, request: IRequest, camera_id: str) -> bytes:
        await self._admin(request)
        camera_id = parse_camera_id(camera_id, "camera_id")
        body = _object(read_json_body(request))
        current = await self._store.get_camera_status(camera_id=camera_id)
        if current is None:
            raise entity_not_found(camera_id)
        now = ms_to_datetime(int(self._clock.seconds() * 1000))
        wire = current.to_dict()
        wire.pop("valid_to", None)
        for key in ("inst_name", "inst_url", "regions"):
            if body.get(key) is not None:
                wire[key] = body[key]
        parsed = CameraStatus.from_dict(wire)
        status = attrs.evolve(parsed, status_id=new_id(), valid_from=now)
        stored = await self._store.update_camera_status(status, time=now, camera_id=camera_id)
        return write_json(request, 200, {"status": stored.to_dict()})
