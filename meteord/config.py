"""
meteord's configuration: embedded defaults (``default.toml``) overridden by a TOML file, then by
``METEORD_<SECTION>_<KEY>`` environment variables, then by twistd options. Every value is typed
and checked here, so a bad setting stops the start with one line naming the key, never a
traceback. Also the ``meteord-config`` command that prints the defaults or the effective values.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tomllib
import uuid
from importlib.resources import files
from types import MappingProxyType, SimpleNamespace
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

import attrs

DEFAULTS_SOURCE = "default"
API_NAMES = ("query", "admin", "import")
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
ACCESS_LOG_CHOICES = ("log", "off")


class ConfigError(ValueError):
    """
    A setting is missing, unknown, of the wrong type or impossible. ``str()`` is one line that
    names the key and where its value came from.
    """


def default_toml() -> str:
    """The embedded defaults file, comments included."""
    return files("meteord").joinpath("default.toml").read_text(encoding="utf-8")


# --- value kinds: each turns a TOML value (typed) or an environment string into a checked value.


@attrs.frozen
class _Kind:
    from_toml: Callable[[Any], Any]
    from_text: Callable[[str], Any]


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_describe(value)}")
    return value


def _integer(minimum: int | None = None, maximum: int | None = None) -> _Kind:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_describe(value)}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value

    def from_text(text: str) -> int:
        try:
            number = int(text.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        return check(number)

    return _Kind(check, from_text)


def _number(minimum: float, exclusive: bool = True, maximum: float | None = None) -> _Kind:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {_describe(value)}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        if value < minimum or (exclusive and value == minimum):
            relation = "greater than" if exclusive else "at least"
            raise ValueError(f"must be {relation} {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum:g}, got {value:g}")
        return value

    def from_text(text: str) -> float:
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        return check(number)

    return _Kind(check, from_text)


def _boolean_text(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _boolean_toml(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_describe(value)}")
    return value


def _string_list(choices: tuple[str, ...] | None = None,
                 check_item: Callable[[str], Any] | None = None) -> _Kind:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {_describe(value)}")
        items = tuple(v.strip() for v in value if v.strip())
        if choices is not None:
            for item in items:
                if item not in choices:
                    raise ValueError(f"unknown value {item!r}; choose from {', '.join(choices)}")
        if check_item is not None:
            for item in items:
                check_item(item)
        return items

    def from_text(text: str) -> tuple[str, ...]:
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                parsed = json.loads(stripped)
            except (ValueError, RecursionError):
                raise ValueError(f"not a valid JSON list: {text!r}") from None
            return check(parsed)
        return check(stripped.split(","))

    return _Kind(check, from_text)


def _choice(*choices: str) -> _Kind:
    def check(value: Any) -> str:
        value = _string(value)
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return _Kind(check, check)


def _checked_string(checker: Callable[[str], None]) -> _Kind:
    def check(value: Any) -> str:
        value = _string(value)
        checker(value)
        return value

    return _Kind(check, check)


def _check_nothing(value: str) -> None:
    """Any string is acceptable."""


def _check_node_id(value: str) -> None:
    if value and (len(value) != 12 or any(c not in "0123456789abcdef" for c in value)):
        raise ValueError(f"must be 12 lowercase hex characters, got {value!r}")


def _check_name(value: str) -> None:
    if len(value) > 64:
        raise ValueError("must be at most 64 characters")
    if not value.isprintable():
        raise ValueError(f"must be printable characters only, got {value!r}")


def parse_target(text: str) -> tuple[str, int | None]:
    """
    Split a ``[discovery] targets`` entry, ``"host"`` or ``"host:port"``, into host and port
    (None when absent: the node's own discovery port applies).

    @raise ValueError: an empty host, an IPv6 address, or a port outside 1-65535.
    """
    host, colon, port_text = text.strip().rpartition(":")
    if not colon:
        host, port_text = port_text, ""
    if not host or ":" in host or any(c.isspace() for c in host):
        raise ValueError(f"discovery target {text!r} is not host or host:port (IPv4 only)")
    if not colon:
        return host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"discovery target {text!r} has a port outside 1-65535")
    return host, int(port_text)


def _check_prefix(value: str) -> None:
    if value and not value.startswith("/"):
        raise ValueError(f"must start with '/', got {value!r}")


_PORT_ZERO = "port 0 is not a usable port"


def _check_endpoint(value: str) -> None:
    if value == "none":
        return
    from twisted.internet.endpoints import serverFromString

    # Parsing only: the endpoint stores the reactor and touches it when listening.
    try:
        endpoint = serverFromString(object(), value)
    except Exception as e:
        raise ValueError(f"not a usable endpoint string {value!r}: {e}") from None
    if getattr(endpoint, "_port", None) == 0:
        raise ValueError(_PORT_ZERO)


def _check_access_log(value: str) -> None:
    if value not in ACCESS_LOG_CHOICES and not os.path.isabs(value):
        raise ValueError('must be "log", "off" or the absolute path of a file')


def _check_database_url(value: str) -> None:
    if not value:
        return
    parts = urlsplit(value)
    if parts.scheme == "sqlite":
        if not parts.path or parts.path == "/":
            raise ValueError(f"sqlite URL needs a path, e.g. sqlite:///var/lib/meteord/db: {value!r}")
        return
    if parts.scheme in ("postgresql", "postgres"):
        if not parts.path.strip("/"):
            raise ValueError("postgresql URL needs a database name")
        for key in parse_qs(parts.query):
            if key not in ("host", "port", "user", "password", "sslmode", "connect_timeout"):
                raise ValueError(f"unsupported postgresql URL parameter {key!r}")
        return
    raise ValueError(
        f"unsupported database URL scheme {parts.scheme or value!r}; use sqlite:/// or postgresql://"
    )


_STRING = _checked_string(_check_nothing)
_PORT = _integer(0, 65535)
_POSITIVE_INT = _integer(1)

SCHEMA: Mapping[str, Mapping[str, _Kind]] = {
    "node": {
        "id": _checked_string(_check_node_id),
        "name": _checked_string(_check_name),
        "data_dir": _STRING,
    },
    "database": {"url": _checked_string(_check_database_url), "pool_size": _integer(1, 100)},
    "files": {"path": _STRING, "max_upload_bytes": _POSITIVE_INT},
    "http": {
        "endpoint": _checked_string(_check_endpoint),
        "prefix": _checked_string(_check_prefix),
        "apis": _string_list(API_NAMES),
        "public_query": _Kind(_boolean_toml, _boolean_text),
        "request_timeout": _number(0.0),
        "access_log": _checked_string(_check_access_log),
    },
    "discovery": {
        "enabled": _Kind(_boolean_toml, _boolean_text),
        "port": _PORT,
        "interval": _number(0.1, exclusive=False, maximum=86400.0),
        "targets": _string_list(check_item=parse_target),
        "secret": _STRING,
        "max_nodes": _POSITIVE_INT,
        "max_datagrams_per_second": _integer(1, 1_000_000),
    },
    "exporter": {
        "enabled": _Kind(_boolean_toml, _boolean_text),
        "mark_interval": _number(0.0),
        "max_failures_before_disable": _POSITIVE_INT,
        "defer_on_failure": _number(0.0, exclusive=False),
        "batch_size": _integer(1, 100_000),
        "concurrency": _integer(1, 256),
    },
    "logging": {
        "level": _choice(*LOG_LEVELS),
        "path": _STRING,
        "format": _choice("text", "json"),
    },
    "metrics": {
        "prometheus": _Kind(_boolean_toml, _boolean_text),
        "statsd_host": _STRING,
        "statsd_port": _PORT,
        "statsd_prefix": _STRING,
    },
    "sentry": {"dsn": _STRING},
    "scripts": {
        "directory": _STRING,
        "timeout": _number(0.0),
        "max_concurrent": _POSITIVE_INT,
    },
}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


# --- the configuration itself


@attrs.frozen
class Config:
    """
    The effective configuration: ``config.http.endpoint`` etc., plus where each value came
    from (``config.sources[("http", "endpoint")]``). Derived values (database URL, node id, ...)
    are already filled in.
    """

    values: Mapping[str, Mapping[str, Any]]
    sources: Mapping[tuple[str, str], str]

    def __getattr__(self, section: str) -> SimpleNamespace:
        try:
            return SimpleNamespace(**self.values[section])
        except KeyError:
            raise AttributeError(section) from None

    def describe_sources(self) -> list[str]:
        """The distinct places values came from, in the order first seen."""
        return list(dict.fromkeys(self.sources.values()))


def _error(section: str, key: str, source: str, problem: str) -> ConfigError:
    return ConfigError(f"[{section}] {key}: {problem} (from {source})")


def _merge_toml(
    values: dict[str, dict[str, Any]],
    sources: dict[tuple[str, str], str],
    document: Mapping[str, Any],
    source: str,
) -> None:
    for section, table in document.items():
        if section not in SCHEMA:
            raise ConfigError(f"[{section}]: unknown section (from {source})")
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}]: expected a table, got {_describe(table)} (from {source})")
        for key, raw in table.items():
            kind = SCHEMA[section].get(key)
            if kind is None:
                raise _error(section, key, source, "unknown key")
            try:
                values[section][key] = kind.from_toml(raw)
            except ValueError as e:
                raise _error(section, key, source, str(e)) from None
            sources[(section, key)] = source


def _read_toml_file(path: str) -> Mapping[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot be read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: not valid TOML: nested too deeply") from None


def _environment_overrides(environ: Mapping[str, str]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for name, text in environ.items():
        if not name.startswith("METEORD_") or name == "METEORD_CONFIG":
            continue
        rest = name[len("METEORD_"):].lower()
        for section, keys in SCHEMA.items():
            if rest.startswith(section + "_") and rest[len(section) + 1:] in keys:
                found[(section, rest[len(section) + 1:])] = text
                break
    return found


def _derive(values: dict[str, dict[str, Any]], sources: dict[tuple[str, str], str]) -> None:
    """Fill in the values whose default depends on other values or on the machine."""
    data_dir = values["node"]["data_dir"]
    derived = {
        ("node", "id"): lambda: f"{uuid.getnode():012x}",
        ("node", "name"): lambda: socket.gethostname()[:64],
        ("database", "url"): lambda: "sqlite:///" + os.path.abspath(
            os.path.join(data_dir, "meteord.sqlite3")
        ),
        ("files", "path"): lambda: os.path.join(data_dir, "files"),
        ("scripts", "directory"): lambda: os.path.join(data_dir, "scripts"),
    }
    for (section, key), make in derived.items():
        if not values[section][key]:
            values[section][key] = make()
            sources[(section, key)] = "derived"


def _check_data_dir(data_dir: str, source: str) -> None:
    """The data directory must exist and be writable, or be creatable."""
    path = os.path.abspath(data_dir)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise _error("node", "data_dir", source, f"{data_dir} is not a directory")
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise _error("node", "data_dir", source, f"{data_dir} is not readable and writable")
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise _error("node", "data_dir", source, f"{data_dir} does not exist and cannot be created")


def _check_log_file(section: str, key: str, path: str, source: str) -> None:
    """A log file must be a file that can be appended to, or creatable."""
    if os.path.exists(path):
        if not os.path.isfile(path):
            raise _error(section, key, source, f"{path} is not a regular file")
        if not os.access(path, os.W_OK):
            raise _error(section, key, source, f"{path} is not writable")
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise _error(section, key, source, f"{path} cannot be created")


def load_config(
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    options: Mapping[tuple[str, str], str] | None = None,
    ephemeral_ports: bool = False,
) -> Config:
    """
    Build the effective configuration. ``config_file`` falls back to ``$METEORD_CONFIG``;
    ``options`` maps ``(section, key)`` to the text given on the command line (or, when
    embedding, to a value of the right type). ``ephemeral_ports`` lets port 0 through, for
    tests and embedding where the kernel should pick a free port.

    @raise ConfigError: for the first bad setting found.
    """
    if environ is None:
        environ = os.environ
    values: dict[str, dict[str, Any]] = {section: {} for section in SCHEMA}
    sources: dict[tuple[str, str], str] = {}
    _merge_toml(values, sources, tomllib.loads(default_toml()), DEFAULTS_SOURCE)

    if config_file is None:
        config_file = environ.get("METEORD_CONFIG") or None
    if config_file is not None:
        _merge_toml(values, sources, _read_toml_file(config_file), f"file {config_file}")

    layers = [
        (_environment_overrides(environ), lambda s, k: f"env METEORD_{s.upper()}_{k.upper()}"),
        (dict(options or {}), lambda s, k: "option"),
    ]
    for overrides, name_source in layers:
        for (section, key), text in overrides.items():
            source = name_source(section, key)
            kind = SCHEMA[section][key]
            parse = kind.from_text if isinstance(text, str) else kind.from_toml
            try:
                values[section][key] = parse(text)
            except ValueError as e:
                if str(e) == _PORT_ZERO and ephemeral_ports:
                    values[section][key] = text
                else:
                    raise _error(section, key, source, str(e)) from None
            sources[(section, key)] = source

    if values["discovery"]["port"] == 0 and not ephemeral_ports:
        raise _error("discovery", "port", sources[("discovery", "port")], _PORT_ZERO)

    _check_data_dir(values["node"]["data_dir"], sources[("node", "data_dir")])
    if values["http"]["access_log"] not in ACCESS_LOG_CHOICES:
        _check_log_file("http", "access_log", values["http"]["access_log"],
                        sources[("http", "access_log")])
    if values["logging"]["path"]:
        _check_log_file("logging", "path", values["logging"]["path"],
                        sources[("logging", "path")])
    _derive(values, sources)
    return Config(
        values=MappingProxyType({s: MappingProxyType(v) for s, v in values.items()}),
        sources=MappingProxyType(sources),
    )


def mask_url(url: str) -> str:
    """
    A database URL with its password, in the address or as a ``password`` query parameter,
    replaced by ``***``, for logs; the rest is kept as written.
    """
    parts = urlsplit(url)
    masked = url
    if parts.password is not None:
        masked = masked.replace(f":{parts.password}@", ":***@", 1)
    if parts.query:
        query = "&".join("password=***" if item.partition("=")[0] == "password" else item
                         for item in parts.query.split("&"))
        masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def render_config(config: Config) -> str:
    """The effective configuration as TOML, each value followed by its source."""
    secret_keys = {("discovery", "secret"), ("sentry", "dsn")}
    lines: list[str] = []
    for section, keys in config.values.items():
        lines.append(f"[{section}]")
        for key, value in keys.items():
            if (section, key) in secret_keys and value:
                value = "***"
            elif (section, key) == ("database", "url"):
                value = mask_url(value)
            source = config.sources[(section, key)]
            lines.append(f"{key} = {_toml_value(value)}  # {source}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``meteord-config echo`` or ``meteord-config show [--config FILE]``."""
    parser = argparse.ArgumentParser(
        prog="meteord-config", description="Print meteord's default or effective configuration."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("echo", help="print the embedded defaults (a commented TOML file)")
    show = commands.add_parser("show", help="print the effective configuration with sources")
    show.add_argument("--config", help="TOML file overriding the defaults")
    arguments = parser.parse_args(argv)
    if arguments.command == "echo":
        sys.stdout.write(default_toml())
        return 0
    try:
        config = load_config(arguments.config)
    except ConfigError as e:
        sys.stderr.write(f"meteord-config: {e}\n")
        return 2
    sys.stdout.write(render_config(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
