"""
Tests for meteord.config: precedence of defaults, file, environment and options, typed parsing,
and one clear error line for every kind of bad setting.
"""

from __future__ import annotations

import io
import os
import tomllib
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from meteord.config import SCHEMA, ConfigError, default_toml, load_config, main, mask_url, render_config


class ConfigTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = self.mktemp()
        self.base_env = {"METEORD_NODE_DATA_DIR": self.data_dir}

    def write_config(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def load(self, text: str | None = None, env: dict[str, str] | None = None,
             options: dict | None = None):
        path = self.write_config(text) if text is not None else None
        return load_config(path, environ={**self.base_env, **(env or {})}, options=options)

    def assertConfigError(self, fragments: list[str], **kwargs) -> str:
        e = self.assertRaises(ConfigError, self.load, **kwargs)
        message = str(e)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


class DefaultsTests(ConfigTestCase):
    def test_every_schema_key_has_a_default(self) -> None:
        document = tomllib.loads(default_toml())
        self.assertEqual(
            {(s, k) for s, t in document.items() for k in t},
            {(s, k) for s, keys in SCHEMA.items() for k in keys},
        )

    def test_defaults_and_derived_values(self) -> None:
        config = self.load()
        self.assertEqual(config.http.endpoint, "tcp:8080")
        self.assertEqual(config.http.prefix, "/api")
        self.assertEqual(config.http.apis, ("query", "admin", "import"))
        self.assertEqual(config.discovery.port, 47623)
        self.assertEqual(config.discovery.max_datagrams_per_second, 1000)
        self.assertEqual(config.exporter.max_failures_before_disable, 4)
        self.assertEqual(
            config.database.url,
            "sqlite:///" + os.path.abspath(os.path.join(self.data_dir, "meteord.sqlite3")),
        )
        self.assertEqual(config.files.path, os.path.join(self.data_dir, "files"))
        self.assertEqual(len(config.node.id), 12)
        self.assertEqual(config.sources[("database", "url")], "derived")
        self.assertEqual(config.sources[("http", "endpoint")], "default")


class PrecedenceTests(ConfigTestCase):
    def test_file_overrides_default(self) -> None:
        config = self.load('[http]\nendpoint = "tcp:9001"\n')
        self.assertEqual(config.http.endpoint, "tcp:9001")
        self.assertTrue(config.sources[("http", "endpoint")].startswith("file "))
        self.assertEqual(config.http.prefix, "/api")

    def test_environment_overrides_file(self) -> None:
        config = self.load('[http]\nendpoint = "tcp:9001"\n', env={"METEORD_HTTP_ENDPOINT": "tcp:9002"})
        self.assertEqual(config.http.endpoint, "tcp:9002")
        self.assertEqual(config.sources[("http", "endpoint")], "env METEORD_HTTP_ENDPOINT")

    def test_option_overrides_environment(self) -> None:
        config = self.load(env={"METEORD_HTTP_ENDPOINT": "tcp:9002"},
                           options={("http", "endpoint"): "tcp:9003"})
        self.assertEqual(config.http.endpoint, "tcp:9003")
        self.assertEqual(config.sources[("http", "endpoint")], "option")

    def test_config_file_from_environment(self) -> None:
        path = self.write_config('[node]\nname = "hub-1"\n')
        config = load_config(environ={**self.base_env, "METEORD_CONFIG": path})
        self.assertEqual(config.node.name, "hub-1")

    def test_environment_lists_comma_separated_or_json(self) -> None:
        comma = self.load(env={"METEORD_DISCOVERY_TARGETS": "10.0.0.255, hub:47000"})
        self.assertEqual(comma.discovery.targets, ("10.0.0.255", "hub:47000"))
        as_json = self.load(env={"METEORD_HTTP_APIS": '["query"]'})
        self.assertEqual(as_json.http.apis, ("query",))

    def test_environment_typed_values(self) -> None:
        config = self.load(env={"METEORD_DISCOVERY_ENABLED": "false",
                                "METEORD_EXPORTER_CONCURRENCY": "8",
                                "METEORD_HTTP_REQUEST_TIMEOUT": "2.5"})
        self.assertIs(config.discovery.enabled, False)
        self.assertEqual(config.exporter.concurrency, 8)
        self.assertEqual(config.http.request_timeout, 2.5)

    def test_integer_accepted_where_number_expected(self) -> None:
        self.assertEqual(self.load("[discovery]\ninterval = 5\n").discovery.interval, 5.0)

    def test_unrelated_environment_ignored(self) -> None:
        config = self.load(env={"METEORD_SOMETHING_ELSE": "x", "PATH": "/bin"})
        self.assertEqual(config.http.endpoint, "tcp:8080")

    def test_ephemeral_ports_allowed_for_embedding(self) -> None:
        config = load_config(environ=self.base_env, ephemeral_ports=True,
                             options={("http", "endpoint"): "tcp:0:interface=127.0.0.1",
                                      ("discovery", "port"): 0})
        self.assertEqual(config.http.endpoint, "tcp:0:interface=127.0.0.1")
        self.assertEqual(config.discovery.port, 0)


class ValidationTests(ConfigTestCase):
    def test_unknown_section(self) -> None:
        self.assertConfigError(["[htp]", "unknown section"], text="[htp]\nendpoint = 'tcp:1'\n")

    def test_unknown_key(self) -> None:
        self.assertConfigError(["[http] port", "unknown key", "from file"], text="[http]\nport = 80\n")

    def test_wrong_type_in_file(self) -> None:
        self.assertConfigError(["[discovery] port", "expected an integer"],
                               text='[discovery]\nport = "47623"\n')

    def test_boolean_is_not_an_integer(self) -> None:
        self.assertConfigError(["[exporter] concurrency", "expected an integer"],
                               text="[exporter]\nconcurrency = true\n")

    def test_wrong_type_in_environment(self) -> None:
        self.assertConfigError(["[discovery] enabled", "env METEORD_DISCOVERY_ENABLED"],
                               env={"METEORD_DISCOVERY_ENABLED": "perhaps"})

    def test_bad_discovery_port(self) -> None:
        self.assertConfigError(["[discovery] port", "at most 65535"], text="[discovery]\nport = 70000\n")
        self.assertConfigError(["[discovery] port", "port 0"], env={"METEORD_DISCOVERY_PORT": "0"})

    def test_bad_max_datagrams_per_second(self) -> None:
        key = "[discovery] max_datagrams_per_second"
        for value, problem in (('"1000"', "got the string '1000'"), ("1.5", "got a number"),
                               ("true", "got a boolean"), ("0", "at least 1, got 0"),
                               ("-20", "at least 1, got -20"),
                               ("1000001", "at most 1000000, got 1000001")):
            self.assertConfigError([key, problem],
                                   text=f"[discovery]\nmax_datagrams_per_second = {value}\n")
        self.assertConfigError([key, "got 'lots'", "env METEORD_DISCOVERY_MAX_DATAGRAMS_PER_SECOND"],
                               env={"METEORD_DISCOVERY_MAX_DATAGRAMS_PER_SECOND": "lots"})
        self.assertConfigError([key, "at least 1, got 0"],
                               env={"METEORD_DISCOVERY_MAX_DATAGRAMS_PER_SECOND": "0"})

    def test_port_zero_endpoint(self) -> None:
        self.assertConfigError(["[http] endpoint", "port 0"], options={("http", "endpoint"): "tcp:0"})

    def test_unparseable_endpoint(self) -> None:
        self.assertConfigError(["[http] endpoint", "endpoint"],
                               options={("http", "endpoint"): "carrier-pigeon:8080"})

    def test_interval_outside_what_beacons_carry(self) -> None:
        for value, problem in (("-1", "at least 0.1"), ("0.05", "at least 0.1"),
                               ("86401", "at most 86400")):
            self.assertConfigError(["[discovery] interval", problem],
                                   text=f"[discovery]\ninterval = {value}\n")
        self.assertEqual(self.load("[discovery]\ninterval = 0.1\n").discovery.interval, 0.1)

    def test_bad_discovery_targets(self) -> None:
        for target in ("h:0", "::1", "hub:http", ":47000"):
            self.assertConfigError(["[discovery] targets", repr(target)],
                                   env={"METEORD_DISCOVERY_TARGETS": f"10.0.0.255,{target}"})

    def test_node_name_must_be_printable(self) -> None:
        self.assertConfigError(["[node] name", "printable"], env={"METEORD_NODE_NAME": "a\tb"})

    def test_log_file_in_a_missing_directory(self) -> None:
        path = os.path.join(self.mktemp(), "meteord.log")
        self.assertConfigError(["[logging] path", "cannot be created"],
                               env={"METEORD_LOGGING_PATH": path})

    def test_log_file_relative_to_the_working_directory(self) -> None:
        config = load_config(environ={**self.base_env, "METEORD_LOGGING_PATH": "meteord.log"})
        self.assertEqual(config.logging.path, "meteord.log")

    def test_config_file_not_utf8_or_nested_too_deeply(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write('[node]\nname = "Caméra"\n'.encode("latin-1"))
        e = self.assertRaises(ConfigError, load_config, path, environ=self.base_env)
        self.assertIn("not UTF-8", str(e))
        self.assertConfigError(["not valid TOML"], text="x = " + "[" * 100_000)
        self.assertConfigError(["[http] apis", "not a valid JSON list"],
                               env={"METEORD_HTTP_APIS": "[" * 100_000})

    def test_unknown_api(self) -> None:
        self.assertConfigError(["[http] apis", "'export'"], options={("http", "apis"): "query,export"})

    def test_bad_choice(self) -> None:
        self.assertConfigError(["[logging] format", "text, json"], text='[logging]\nformat = "xml"\n')

    def test_unsupported_database_scheme(self) -> None:
        self.assertConfigError(["[database] url", "unsupported database URL scheme 'mysql'"],
                               options={("database", "url"): "mysql://db/x"})

    def test_postgresql_url_needs_a_database(self) -> None:
        self.assertConfigError(["[database] url", "database name"],
                               options={("database", "url"): "postgresql://host"})

    def test_bad_node_id(self) -> None:
        self.assertConfigError(["[node] id", "12 lowercase hex"], env={"METEORD_NODE_ID": "XYZ"})

    def test_data_dir_is_a_file(self) -> None:
        path = self.mktemp()
        open(path, "w").close()
        self.assertConfigError(["[node] data_dir", "not a directory"],
                               options={("node", "data_dir"): path})

    def test_unreadable_data_dir(self) -> None:
        if os.geteuid() == 0:
            parent = "/proc/1"
        else:
            parent = self.mktemp()
            os.mkdir(parent, 0o500)
        self.assertConfigError(["[node] data_dir", "cannot be created"],
                               options={("node", "data_dir"): os.path.join(parent, "x", "data")})

    def test_access_log_choices_and_paths(self) -> None:
        path = os.path.abspath(self.mktemp())
        for value in ("log", "off", path):
            self.assertEqual(self.load(options={("http", "access_log"): value}).http.access_log,
                             value)

    def test_access_log_relative_path(self) -> None:
        self.assertConfigError(["[http] access_log", '"log", "off" or the absolute path'],
                               options={("http", "access_log"): "access.log"})
        self.assertConfigError(["[http] access_log"], text='[http]\naccess_log = ""\n')

    def test_access_log_is_not_a_regular_file(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        fifo = os.path.abspath(self.mktemp())
        os.mkfifo(fifo)
        for path in (directory, fifo):
            self.assertConfigError(["[http] access_log", "is not a regular file"],
                                   options={("http", "access_log"): path})

    def test_access_log_cannot_be_created(self) -> None:
        path = os.path.join(os.path.abspath(self.mktemp()), "missing", "access.log")
        self.assertConfigError(["[http] access_log", "cannot be created"],
                               env={"METEORD_HTTP_ACCESS_LOG": path})

    def test_unreadable_config_file(self) -> None:
        e = self.assertRaises(ConfigError, load_config, self.mktemp(), environ=self.base_env)
        self.assertIn("cannot be read", str(e))

    def test_invalid_toml(self) -> None:
        self.assertConfigError(["not valid TOML"], text="[http\n")


class CommandTests(ConfigTestCase):
    def run_main(self, argv: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(argv)
        return code, out.getvalue(), err.getvalue()

    def test_echo_prints_the_defaults(self) -> None:
        code, out, _ = self.run_main(["echo"])
        self.assertEqual((code, out), (0, default_toml()))

    def test_show_prints_values_with_sources(self) -> None:
        path = self.write_config(f'[node]\ndata_dir = "{self.data_dir}"\n[http]\nendpoint = "tcp:9005"\n')
        code, out, _ = self.run_main(["show", "--config", path])
        self.assertEqual(code, 0)
        self.assertIn(f'endpoint = "tcp:9005"  # file {path}', out)
        self.assertIn('prefix = "/api"  # default', out)

    def test_show_reports_errors_in_one_line(self) -> None:
        path = self.write_config("[http]\nbogus = 1\n")
        code, out, err = self.run_main(["show", "--config", path])
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("[http] bogus: unknown key", err)

    def test_show_masks_secrets(self) -> None:
        config = self.load(options={("database", "url"): "postgresql://me:hunter2@db/meteord",
                                    ("discovery", "secret"): "s3cret"})
        text = render_config(config)
        self.assertNotIn("hunter2", text)
        self.assertNotIn("s3cret", text)
        self.assertIn("postgresql://me:***@db/meteord", text)

    def test_mask_url_without_password(self) -> None:
        self.assertEqual(mask_url("sqlite:///x.db"), "sqlite:///x.db")

    def test_mask_url_password_as_a_query_parameter(self) -> None:
        self.assertEqual(mask_url("postgresql:///meteord?host=/run/pg&password=hunter2"),
                         "postgresql:///meteord?host=/run/pg&password=***")
        self.assertEqual(mask_url("postgresql://me:a@db/m?password=b&passwordless=1"),
                         "postgresql://me:***@db/m?password=***&passwordless=1")
