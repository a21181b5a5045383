"""
What meteord's HTTP layer costs a request, without sockets, a database or a load generator.

Builds the node's real site (`meteord.service.build_site`: every API, the routing, the error
handling, the JSON encoder, the request tracking) over a stub store whose ``get_event_wire``
answers at once with an event of two files and eight meta items, and feeds
``GET /api/events/id/<id>`` to one HTTP connection over an in-memory transport. Prints the
microseconds of one request for each access log setting: ``off``, ``file`` (twisted.web's
own log file) and ``log`` (a line in the daemon's text log, as ``twistd`` writes it). The
figures are per request on one core, so they add directly to what the database costs; run
them a few times, as with every benchmark on a shared machine.

    PYTHONPATH=. python bench/http_layer_bench.py [--requests N] [--profile off|file|log]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogBeginner

from meteord.config import load_config
from meteord.logs import make_log_observer
from meteord.model import Event, FileRecord, Meta, new_id
from meteord.service import build_site

MODES = ("off", "file", "log")


def an_event() -> Event:
    """An event of the size the store benchmark's data set has: two files, eight metas."""
    when = datetime(2025, 1, 2, 3, 4, 5, 123000, tzinfo=timezone.utc)

    def metas(count: int) -> list[Meta]:
        return [Meta(key=f"meteorpi:key{n}", type="number", value=1.5 * n) for n in range(count)]

    files = [FileRecord(file_id=new_id(), camera_id="cam01", status_id=new_id(),
                        mime_type="image/png", file_name=f"frame{n}.png",
                        semantic_type="meteorpi:triggers/event/maxBrightness/lensCorr",
                        file_time=when, file_size=123456, md5="a" * 32, sha256="b" * 64,
                        meta=metas(2)) for n in range(2)]
    return Event(event_id=new_id(), camera_id="cam01", event_time=when,
                 event_type="meteorpi:meteor", status_id=new_id(), files=files, meta=metas(4))


class StubStore:
    """Answers ``get_event_wire`` with one event's wire form, made afresh each time, at once."""

    def __init__(self, event: Event) -> None:
        self._event = event

    def get_event_wire(self, event_id: str) -> Deferred[dict[str, Any]]:
        return succeed(self._event.to_dict())

    def check(self) -> Deferred[bool]:
        return succeed(True)


def measure(mode: str, work: str, requests: int, profile: bool) -> float:
    """Microseconds per request with ``[http] access_log`` as ``mode`` says."""
    access_log = os.path.join(work, f"access-{mode}.log") if mode == "file" else mode
    config = load_config(environ={}, options={("node", "data_dir"): os.path.join(work, mode),
                                              ("http", "access_log"): access_log})
    event = an_event()
    site = build_site(config, StubStore(event), reactor)
    site.startFactory()
    channel = site.buildProtocol(("127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    request = (f"GET /api/events/id/{event.event_id} HTTP/1.1\r\nHost: localhost\r\n"
               f"User-Agent: http-layer-bench\r\n\r\n").encode("ascii")
    for _ in range(500):
        channel.dataReceived(request)
    if b" 200 OK" not in transport.value():
        raise SystemExit(f"unexpected response: {transport.value()[:300]!r}")
    transport.clear()
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler is not None:
        profiler.enable()
    for number in range(requests):
        channel.dataReceived(request)
        if number % 1000 == 999:
            transport.clear()
    if profiler is not None:
        profiler.disable()
    elapsed = time.process_time() - started
    site.stopFactory()
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(40)
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", choices=MODES, help="print a cProfile of this mode only")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meteord-http-layer-") as work:
        # The daemon's text log as twistd sets it up, written to a file like any daemon log.
        log_config = load_config(environ={}, options={("node", "data_dir"): work})
        with open(os.path.join(work, "meteord.log"), "a", encoding="utf-8", buffering=1) as log:
            globalLogBeginner.beginLoggingTo([make_log_observer(log_config, log)],
                                             redirectStandardIO=False)
            modes: Any = [options.profile] if options.profile else MODES
            for mode in modes:
                micros = measure(mode, work, options.requests, options.profile is not None)
                print(f"access_log {mode:>4}: {micros:6.1f} µs of CPU a request")


if __name__ == "__main__":
    main()
