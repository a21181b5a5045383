"""
Tests for the twistd plugin: discovery of the lazy plugin, option parsing into configuration
overrides, and a bad setting ending the start with one line.
"""

from __future__ import annotations

import gc
import os
import sys

from twisted.application.service import IServiceMaker, MultiService, Service
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from meteord.tap import Options, _DaemonNode, makeService


class PluginTests(SynchronousTestCase):
    def test_plugin_is_found_and_lazy(self) -> None:
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("meteord", makers)
        self.assertEqual(makers["meteord"].module, "meteord.tap")

    def test_no_init_files_shipped_in_twisted_namespace(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.assertFalse(os.path.exists(os.path.join(root, "twisted", "__init__.py")))
        self.assertFalse(os.path.exists(os.path.join(root, "twisted", "plugins", "__init__.py")))


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_no_options_override_nothing(self) -> None:
        self.assertEqual(self.parse().overrides(), {})

    def test_every_option_maps_to_a_setting(self) -> None:
        options = self.parse("--config", "c.toml", "--data-dir", "d", "--database", "sqlite:///x",
                             "--http", "tcp:9000", "--apis", "query", "--no-discovery", "--no-exporter")
        self.assertEqual(options["config"], "c.toml")
        self.assertEqual(options.overrides(), {
            ("node", "data_dir"): "d",
            ("database", "url"): "sqlite:///x",
            ("http", "endpoint"): "tcp:9000",
            ("http", "apis"): "query",
            ("discovery", "enabled"): "false",
            ("exporter", "enabled"): "false",
        })

    def test_unknown_option_is_a_usage_error(self) -> None:
        self.assertRaises(UsageError, self.parse, "--frobnicate")

    def test_help_lists_options(self) -> None:
        text = str(Options())
        for option in ("--config", "--data-dir", "--database", "--http", "--apis",
                       "--no-discovery", "--no-exporter"):
            self.assertIn(option, text)


class MakeServiceTests(SynchronousTestCase):
    def test_bad_setting_exits_with_one_line(self) -> None:
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--http", "tcp:0"])
        e = self.assertRaises(SystemExit, makeService, options)
        self.assertEqual(str(e), "meteord: [http] endpoint: port 0 is not a usable port (from option)")

    def test_builds_a_node(self) -> None:
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--http", "tcp:18080:interface=127.0.0.1",
                              "--no-discovery", "--no-exporter"])
        service = makeService(options)
        self.assertIsInstance(service, MultiService)
        self.assertEqual([s.name for s in service], ["meteord"])
        self.assertIn("meteord.tap", sys.modules)


class DaemonNodeTests(SynchronousTestCase):
    def test_start_freezes_what_start_up_made(self) -> None:
        """
        The daemon's start moves what exists once its services have started into the
        collector's permanent generation, out of every later collection's scan.
        """
        gc.unfreeze()
        self.addCleanup(gc.unfreeze)
        made_by_start_up = {"kept": "for the whole run"}
        frozen_when_started = []

        class Child(Service):
            def startService(self) -> None:
                frozen_when_started.append(gc.get_freeze_count())

        node = MultiService()
        Child().setServiceParent(node)
        _DaemonNode(node, lambda event: None).startService()
        self.assertEqual(frozen_when_started, [0])
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertNotIn(id(made_by_start_up), {id(o) for o in gc.get_objects()})
