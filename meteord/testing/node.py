"""
A whole meteord node in process, for trial tests (meteord's own and other projects'): started
on an ephemeral loopback port with a temporary SQLite store (or any database URL), with its base
URL, its store and the credentials of its initial admin user at hand.

    class MyTests(TestCase):
        async def test_something(self):
            node = await start_node(self.mktemp())
            self.addCleanup(node.stop)
            response = await treq.get(node.url("cameras"))
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import attrs
from twisted.internet.defer import Deferred

from meteord.config import load_config
from meteord.service import MeteordNode, make_service
from meteord.store.service import INITIAL_PASSWORD_FILE


@attrs.define
class RunningNode:
    """A started node: ``base_url`` ends with the API prefix, e.g. ``http://127.0.0.1:4321/api``."""

    service: MeteordNode
    base_url: str
    store: Any
    admin_user: str
    admin_password: str

    def url(self, path: str) -> str:
        """The absolute URL of an API path (``"cameras"`` or ``"/cameras"``)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    @property
    def admin_auth(self) -> tuple[str, str]:
        """``(user, password)`` of the initial admin, as treq's ``auth=`` takes it."""
        return (self.admin_user, self.admin_password)

    def stop(self) -> Deferred[None]:
        """Stop every service of the node (port closed, store closed)."""
        return self.service.stopService()


async def start_node(
    data_dir: str,
    *,
    database_url: str | None = None,
    apis: tuple[str, ...] = ("query", "admin", "import"),
    exporter: bool = False,
    settings: Mapping[tuple[str, str], Any] | None = None,
    reactor: Any = None,
) -> RunningNode:
    """
    Start a node with its data under ``data_dir`` on ``127.0.0.1`` and an ephemeral port.
    Discovery is off (it needs a real port to announce); the exporter is off unless asked for.
    ``settings`` overrides any other configuration value, keyed ``(section, key)``.
    """
    if reactor is None:
        from twisted.internet import reactor
    options: dict[tuple[str, str], Any] = {
        ("node", "data_dir"): data_dir,
        ("http", "endpoint"): "tcp:0:interface=127.0.0.1",
        ("http", "apis"): list(apis),
        ("discovery", "enabled"): False,
        ("exporter", "enabled"): exporter,
    }
    if database_url is not None:
        options[("database", "url")] = database_url
    options.update(settings or {})
    config = load_config(environ={}, options=options, ephemeral_ports=True)
    node = make_service(config, reactor)
    node.startService()
    try:
        port = await node.getServiceNamed("http").when_listening()
    except BaseException:
        await node.stopService()
        raise
    store = node.getServiceNamed("store").store
    password = ""
    password_file = os.path.join(data_dir, INITIAL_PASSWORD_FILE)
    if os.path.exists(password_file):
        with open(password_file) as f:
            password = f.read().strip()
    prefix = config.http.prefix.rstrip("/")
    return RunningNode(
        service=node,
        base_url=f"http://127.0.0.1:{port.getHost().port}{prefix}",
        store=store,
        admin_user="admin",
        admin_password=password,
    )
