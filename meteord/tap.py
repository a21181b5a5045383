"""
twistd glue for meteord: the command-line ``Options`` and ``makeService``, which loads the
configuration and hands it to ``meteord.service.make_service``. Nothing else lives here.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.components import Componentized

from meteord.config import ConfigError, load_config


class Options(usage.Options):
    """``twistd meteord`` options; each overrides the configuration file and environment."""

    synopsis = "[options]"
    longdesc = (
        "Run a meteord node: the query, admin and import HTTP APIs, UDP discovery and the "
        "exporter, on an embedded SQLite store by default. Settings not given here come from "
        "METEORD_<SECTION>_<KEY> environment variables, then the --config file, then the "
        "embedded defaults (see `meteord-config echo`)."
    )
    optParameters = [
        ["config", "c", None, "TOML file overriding the embedded defaults [default: $METEORD_CONFIG]"],
        ["data-dir", "d", None, "where the default SQLite database and file store live [./meteord-data]"],
        ["database", None, None, "sqlite:///path or postgresql://user:pass@host:port/db"],
        ["http", None, None, "Twisted server endpoint string, or 'none' [tcp:8080]"],
        ["apis", None, None, "comma-separated APIs to mount: query,admin,import"],
    ]
    optFlags = [
        ["no-discovery", None, "leave UDP discovery out entirely"],
        ["no-exporter", None, "leave the exporter out entirely"],
    ]

    _settings = {
        "data-dir": ("node", "data_dir"),
        "database": ("database", "url"),
        "http": ("http", "endpoint"),
        "apis": ("http", "apis"),
    }

    def overrides(self) -> dict[tuple[str, str], str]:
        """The configuration settings given on the command line, as text."""
        given = {setting: self[option] for option, setting in self._settings.items()
                 if self[option] is not None}
        if self["no-discovery"]:
            given[("discovery", "enabled")] = "false"
        if self["no-exporter"]:
            given[("exporter", "enabled")] = "false"
        return given


class _DaemonNode(MultiService):
    """
    The node as twistd runs it. twistd asks the application for an ``ILogObserver`` after
    ``makeService`` returns; handing it ours applies ``[logging]`` to the daemon's output.
    """

    def __init__(self, node: MultiService, log_observer: ILogObserver) -> None:
        super().__init__()
        self._log_observer = log_observer
        node.setServiceParent(self)

    def startService(self) -> None:
        """
        Start the node, then move what start-up made (modules, classes, the configuration)
        out of the garbage collector's sight with ``gc.freeze``: its full collections then scan
        only what requests create, about a third of their cost under load. Done here, in the
        daemon, not in ``make_service``: a program embedding a node owns its own collector.
        """
        super().startService()
        gc.collect()
        gc.freeze()

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._log_observer)
        super().setServiceParent(parent)


def makeService(options: Options) -> MultiService:
    """Load the configuration (one clear line and exit on error) and build the node."""
    try:
        config = load_config(options["config"], options=options.overrides())
    except ConfigError as e:
        raise SystemExit(f"meteord: {e}")
    from meteord.logs import make_log_observer
    from meteord.service import make_service

    return _DaemonNode(make_service(config), make_log_observer(config))
