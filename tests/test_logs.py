"""
Tests for meteord.logs and the start-up line: the level filter, text and JSON-lines output,
and a start-up line that names what the node runs with (the database password masked).
"""

from __future__ import annotations

import io
import json
from unittest import mock

from twisted.internet import reactor
from twisted.logger import (
    Logger,
    LogLevel,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
)
from twisted.trial.unittest import SynchronousTestCase, TestCase

from meteord.config import load_config
from meteord import logs
from meteord.logs import ACCESS_NAMESPACE, make_log_observer
from meteord.service import make_service


def config_with(data_dir: str, **logging: str):
    options = {("node", "data_dir"): data_dir}
    options.update({("logging", key): value for key, value in logging.items()})
    return load_config(environ={}, options=options)


class LogObserverTests(SynchronousTestCase):
    def emit(self, config) -> str:
        stream = io.StringIO()
        log = Logger(namespace="meteord.test", observer=make_log_observer(config, stream))
        log.debug("quiet {n}", n=1)
        log.info("said {n}", n=2)
        log.error("bad {n}", n=3)
        return stream.getvalue()

    def test_text_at_info_leaves_out_debug(self) -> None:
        text = self.emit(config_with(self.mktemp()))
        self.assertNotIn("quiet 1", text)
        self.assertIn("said 2", text)
        self.assertIn("bad 3", text)

    def test_level_error_keeps_only_errors(self) -> None:
        text = self.emit(config_with(self.mktemp(), level="error"))
        self.assertNotIn("said 2", text)
        self.assertIn("bad 3", text)

    def test_json_is_one_object_per_line(self) -> None:
        text = self.emit(config_with(self.mktemp(), format="json", level="debug"))
        lines = text.splitlines()
        self.assertEqual(len(lines), 3)
        events = [json.loads(line) for line in lines]
        self.assertEqual([e["n"] for e in events], [1, 2, 3])
        self.assertEqual(events[2]["log_level"]["name"], "error")

    def test_text_times_as_twisted_writes_them(self) -> None:
        """Each line starts with the event's time as ``twisted.logger.formatTime`` writes it."""
        stream = io.StringIO()
        observer = make_log_observer(config_with(self.mktemp()), stream)
        times = [1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.2, -0.5,
                 1_700_000_000.9999998, 1_700_000_000.9999994, -1e-7, None]
        for when in times:
            observer({"log_format": "at {n}", "n": when, "log_time": when,
                      "log_level": LogLevel.info, "log_namespace": "meteord.test"})
        lines = stream.getvalue().splitlines()
        self.assertEqual([line.split(" ", 1)[0] for line in lines],
                         [formatTime(when) for when in times])

    def test_access_lines_as_the_general_formatter_writes_them(self) -> None:
        """The access log's short cut writes exactly what formatEventAsClassicLogText does."""
        line = '"127.0.0.1" - - [23/Nov/2026:05:01:04 +0000] "GET /x HTTP/1.1" 200 2 "-" "-"'
        base = {"log_namespace": ACCESS_NAMESPACE, "log_format": "{line}",
                "log_level": LogLevel.info, "log_time": 1_700_000_000.25, "line": line}
        short_cut = [
            base,
            {**base, "line": "two\nlines {with} braces"},
            {**base, "log_level": LogLevel.warn},
            {**base, "log_time": None},
        ]
        general = [
            {**base, "log_system": "elsewhere"},
            {**base, "log_namespace": "meteord.other"},
            {**base, "line": ""},
        ]
        expected = [formatEventAsClassicLogText(event, formatTime=logs._format_time)
                    for event in short_cut + general]

        def not_called(event, formatTime):
            raise AssertionError("the general formatter wrote an access line")

        with mock.patch.object(logs, "formatEventAsClassicLogText", not_called):
            written = [logs._format_text(event) for event in short_cut]
        written += [logs._format_text(event) for event in general]
        self.assertEqual(written, expected)

    def test_log_file(self) -> None:
        path = self.mktemp()
        config = config_with(self.mktemp(), path=path)
        observer = make_log_observer(config)
        Logger(observer=observer).info("to the file")
        with open(path) as f:
            self.assertIn("to the file", f.read())


class StartupLineTests(TestCase):
    async def test_startup_line_names_the_essentials(self) -> None:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        config = load_config(environ={}, ephemeral_ports=True, options={
            ("node", "data_dir"): self.mktemp(),
            ("http", "endpoint"): "tcp:0:interface=127.0.0.1",
            ("discovery", "enabled"): "false",
            ("exporter", "enabled"): "false",
        })
        node = make_service(config, reactor)
        node.startService()
        await node.getServiceNamed("http").when_listening()
        await node.stopService()
        (line,) = [e for e in events if "starting" in e.get("log_format", "")]
        self.assertEqual(line["version"], "0.1.0")
        self.assertIn("option", line["sources"])
        self.assertEqual(line["database"], config.database.url)
        self.assertEqual(line["endpoint"], "tcp:0:interface=127.0.0.1")
        self.assertEqual(line["components"], "store, http")

    def test_database_password_is_masked(self) -> None:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        config = load_config(environ={}, options={
            ("node", "data_dir"): self.mktemp(),
            ("database", "url"): "postgresql://meteor:hunter2@127.0.0.1:1/meteord",
            ("http", "endpoint"): "none",
            ("discovery", "enabled"): "false",
            ("exporter", "enabled"): "false",
        })
        node = make_service(config, reactor)
        node.startService()
        self.addCleanup(node.stopService)
        (line,) = [e for e in events if "starting" in e.get("log_format", "")]
        self.assertEqual(line["database"], "postgresql://meteor:***@127.0.0.1:1/meteord")
