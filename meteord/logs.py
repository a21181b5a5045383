"""
Log output for the daemon, configured by ``[logging]``: a level filter over text or JSON-lines
output to standard error or a file, all through ``twisted.logger``.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import IO, Optional

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
)

from meteord.config import Config

# The namespace of the access log's events (a line per HTTP request).
ACCESS_NAMESPACE = "meteord.access"


def open_log_stream(path: str) -> IO[str]:
    """Standard error for an empty path, else the file opened for appending, line-buffered."""
    if not path:
        return sys.stderr
    return open(path, "a", encoding="utf-8", buffering=1)


def make_log_observer(config: Config, stream: IO[str] | None = None) -> ILogObserver:
    """An observer writing events at or above ``[logging] level`` in ``[logging] format``."""
    if stream is None:
        stream = open_log_stream(config.logging.path)
    if config.logging.format == "json":
        observer = jsonFileLogObserver(stream, recordSeparator="")
    else:
        observer = FileLogObserver(stream, _format_text)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(config.logging.level))
    return FilteringLogObserver(observer, [predicate])


def _format_text(event: LogEvent) -> Optional[str]:
    """
    An event as ``formatEventAsClassicLogText`` writes it. An access log line (one a request,
    already formatted) is written without the general formatter, which parses the format
    string and works out the system name for every event.
    """
    line = event.get("line")
    level = _LEVEL_NAMES.get(event.get("log_level"))
    if (event.get("log_namespace") == ACCESS_NAMESPACE and event.get("log_format") == "{line}"
            and isinstance(line, str) and line and level is not None
            and "log_system" not in event and "log_failure" not in event):
        text = line.replace("\n", "\n\t")
        return f"{_format_time(event.get('log_time'))} [{ACCESS_NAMESPACE}#{level}] {text}\n"
    return formatEventAsClassicLogText(event, formatTime=_format_time)


_LEVEL_NAMES = {level: level.name for level in LogLevel.iterconstants()}


@functools.lru_cache(maxsize=8)
def _format_second(second: int) -> str:
    return formatTime(second)


def _format_time(when: Optional[float]) -> str:
    """
    ``twisted.logger.formatTime``, computed once a second: it shows whole seconds, and working
    out the local time zone for each event was half the cost of writing a line of the
    access log. A time within half a microsecond of the next second (which formatTime rounds
    up into it) is formatted as it is.
    """
    if when is None:
        return formatTime(when)
    second = math.floor(when)
    if when - second >= 0.9999995:
        return formatTime(when)
    return _format_second(second)
