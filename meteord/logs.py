"""
Log output for the daemon, configured by ``[logging]``: a level filter over text or JSON-lines
output to standard error or a file, all through ``twisted.logger``.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

from meteord.config import Config


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
        observer = textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(config.logging.level))
    return FilteringLogObserver(observer, [predicate])
