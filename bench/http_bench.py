"""
The HTTP API of one meteord process under load from other processes, on the data set of
``bench/store_bench.py``.

Starts ``twistd -n meteord`` (query, admin and import APIs, discovery with a secret, no
exporter) on a database that ``store_bench.py --keep`` filled with N events, then drives it
from separate processes at a fixed number of connections (default 16):

- ``wrk`` (with ``bench/http_bench.lua``) for the reads: the camera + 30-day window search
  (newest 20 with the count, as ``store_bench.py`` measures it at the store), event by id, and
  the download of a 5 MB file;
- event by id again, without and then with a flood of junk datagrams at a fixed rate (default
  20,000/s) sent to the node's discovery port by a child process;
- with ``--import-database``, a second node on that database (a copy of the data set: the
  imported events would change the kept one) and a Python client process (``import-client``
  below: treq and ``meteord.exporter.protocol.ExportProtocol``) pushing new events with two
  100 KB files each over the import protocol.

All of this is at saturation (closed loop, as fast as the node answers): capacity, not the
latency at a given load; ``bench/latency_bench.py`` measures latency at a fixed request rate,
with and without the flood.

The node keeps the default access log (a line per request in its daemon log, which goes to a
file) unless ``--access-log`` says ``file`` (its own file) or ``off``.

For each load it prints requests/s, p50/p99 latency, the node's RSS before and after (and the
peak, sampled every 50 ms), and the CPU the node used. Run it alone (``flock``), and in a
network namespace with only loopback so that nothing, not even the node's broadcast
announcements, leaves the machine:

    flock /tmp/bench.lock unshare -n sh -c 'ip link set lo up && exec python bench/http_bench.py \\
        --database sqlite:///DIR/bench-1000000.sqlite3 --files DIR/files --events 1000000 \\
        --import-database sqlite:///COPY.sqlite3 --import-files COPYDIR/files'

Side effects on ``--database``: one file record of 5 MB (``semantic_type``
``meteord:http-bench/download``) and its bytes, added once and found again on later runs; the
event count is unchanged, so ``store_bench.py`` can still reuse the database. On
``--import-database``: a user ``http-bench`` with role ``import``, and the imported events.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, quote_plus

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import store_bench  # noqa: E402  (the data set's ids, cameras and windows)

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "http_bench.lua")
DOWNLOAD_TYPE = "meteord:http-bench/download"
DOWNLOAD_BYTES = 5 * 1024 * 1024
IMPORT_USER = "http-bench"
IMPORT_PASSWORD = "http-bench password"
DISCOVERY_SECRET = "http bench secret"
WARM_UP_SECONDS = 2.0
RSS_SAMPLE_SECONDS = 0.05
MIB = 1024 * 1024


# --- preparing the data set


def prepare(url: str, files: str, events: int, user: bool) -> str | None:
    """
    Before any node runs, in a child process (``task.react`` ends the process it runs in):
    make sure the 5 MB file is stored (return its id) or, with ``user``, that the import user
    exists (return None).
    """
    output = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "prepare", url, files, str(events),
         "user" if user else "file"], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def prepare_here(url: str, files: str, events: int, user: bool) -> None:
    """What `prepare` runs in the child process; prints the file id as JSON."""
    from twisted.internet import defer, task

    from meteord.model import FileRecordSearch
    from meteord.store.sql import open_store

    found: list[str | None] = [None]

    async def run(reactor: Any) -> None:
        store = await open_store(url, files, reactor=reactor)
        try:
            if user:
                await store.create_or_update_user(IMPORT_USER, IMPORT_PASSWORD,
                                                  ["user", "import"])
                return
            result = await store.search_files(FileRecordSearch(semantic_type=DOWNLOAD_TYPE,
                                                               limit=1))
            if result["files"]:
                found[0] = result["files"][0].file_id
                return
            with tempfile.NamedTemporaryFile(dir=files, delete=False) as f:
                f.write(random.Random(5).randbytes(DOWNLOAD_BYTES))
            at = datetime.fromtimestamp(store_bench.start_ms(events) / 1000 + 3600, timezone.utc)
            record = await store.register_file(
                f.name, "video/mp4", DOWNLOAD_TYPE, at, [], camera_id=store_bench.CAMERAS[0],
                file_name="http-bench-5mb.mp4")
            found[0] = record.file_id
        finally:
            await store.close()
            print(json.dumps(found[0]), flush=True)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


def search_paths(events: int, count: int, prefix: str) -> list[str]:
    """
    Camera + 30-day window searches as ``store_bench.py`` makes them (random camera, window
    ending at a random time of the history, newest 20, with the count), as GET paths with the
    search JSON URL-encoded twice, as the MeteorPi client sends it.
    """
    rng = random.Random(16)
    first, last = store_bench.start_ms(events), store_bench.start_ms(events) + store_bench.span_ms(
        events)
    days = 30
    paths = []
    for _ in range(count):
        before = rng.randrange(min(first + days * store_bench.DAY_MS, last), last + 1)
        search = {"camera_ids": [rng.choice(store_bench.CAMERAS)],
                  "after": before - days * store_bench.DAY_MS, "before": before, "limit": 20}
        segment = quote(quote_plus(json.dumps(search, separators=(",", ":"))), safe="")
        paths.append(f"{prefix}/events/{segment}")
    return paths


def event_paths(events: int, count: int, prefix: str) -> list[str]:
    rng = random.Random(17)
    return [f"{prefix}/events/id/{store_bench.entity_id('event', rng.randrange(events))}"
            for _ in range(count)]


# --- the node and what is measured of it


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """A ``twistd -n meteord`` process, its RSS sampled in a thread while it runs."""

    def __init__(self, url: str, files: str, work: str, name: str,
                 access_log: str = "log") -> None:
        self.port = free_port()
        self.discovery_port = free_port(socket.SOCK_DGRAM)
        self.base = f"http://127.0.0.1:{self.port}"
        data_dir = os.path.join(work, name)
        os.makedirs(data_dir, exist_ok=True)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        env = {
            **os.environ,
            # The node runs in its data directory: a relative PYTHONPATH would not find it.
            "PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in (
                os.environ.get("PYTHONPATH") or os.path.dirname(HERE)).split(os.pathsep)),
            "METEORD_FILES_PATH": files,
            "METEORD_DISCOVERY_PORT": str(self.discovery_port),
            "METEORD_DISCOVERY_SECRET": DISCOVERY_SECRET,
            "METEORD_LOGGING_PATH": os.path.join(data_dir, "meteord.log"),
            "METEORD_HTTP_ACCESS_LOG": (os.path.join(data_dir, "access.log")
                                        if access_log == "file" else access_log),
        }
        self.process = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "meteord", "--data-dir", data_dir, "--database", url,
             "--http", f"tcp:{self.port}:interface=127.0.0.1", "--no-exporter"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=data_dir)
        self.peak_rss = 0.0
        self._sampling = True
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/api/healthz", timeout=5) as r:
                    r.read()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise SystemExit(f"the node did not answer /api/healthz; see {data_dir}")
                time.sleep(0.2)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def status(self, key: str) -> float:
        """A ``kB`` line of /proc/<pid>/status, in MiB."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        raise KeyError(key)

    def rss(self) -> float:
        return self.status("VmRSS")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        while self._sampling and self.process.poll() is None:
            try:
                self.peak_rss = max(self.peak_rss, self.rss())
            except (OSError, KeyError):
                return
            time.sleep(RSS_SAMPLE_SECONDS)

    def stop(self) -> None:
        self._sampling = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Measured:
    """Around one load: the node's RSS before and after, the peak in between, CPU used."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def __enter__(self) -> Measured:
        self.node.peak_rss = self.rss_before = self.node.rss()
        self.cpu_before = self.node.cpu_seconds()
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.began
        self.cpu = (self.node.cpu_seconds() - self.cpu_before) / self.elapsed
        self.rss_after = self.node.rss()
        self.rss_peak = max(self.node.peak_rss, self.rss_after)


_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(wrk_path: str, base: str, paths_file: str, connections: int, seconds: float,
        start: int = 0) -> dict[str, Any]:
    """One wrk run (one thread); requests/s, p50/p99 ms, MB/s, responses that were not 2xx."""
    output = subprocess.run(
        [wrk_path, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
         "--timeout", "30s", "-s", LUA, base, "--", paths_file, str(start)],
        check=True, capture_output=True, text=True).stdout
    latency = {int(p): float(v) * _WRK_UNITS[u] for p, v, u in _WRK_LATENCY.findall(output)}
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", output)
    scale = {"B": 1e-6, "KB": 1024 / 1e6, "MB": MIB / 1e6, "GB": 1024 * MIB / 1e6}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "p50": latency[50], "p99": latency[99],
        "mbps": float(transfer.group(1)) * scale[transfer.group(2)],
        "bad": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
        "raw": output,
    }


# --- the discovery flood (a child process)


def junk_datagrams() -> list[bytes]:
    """The even mix of junk of ``discovery_bench.py`` (junk to a node with a secret)."""
    import discovery_bench

    kinds = list(discovery_bench.junk_kinds(random.Random(1)).values())
    return [kinds[i % len(kinds)](i) for i in range(900)]


def flood(port: int, rate: float, seconds: float) -> None:
    """Send junk to 127.0.0.1:``port`` at ``rate`` datagrams/s for ``seconds``; print the count."""
    datagrams = junk_datagrams()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    sent = failed = 0
    began = time.monotonic()
    deadline = began + seconds
    while (now := time.monotonic()) < deadline:
        due = int((now - began) * rate)
        while sent + failed < due:
            try:
                s.sendto(datagrams[(sent + failed) % len(datagrams)], ("127.0.0.1", port))
                sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                failed += 1
        time.sleep(0.0005)
    print(json.dumps({"sent": sent, "failed": failed, "seconds": time.monotonic() - began}))


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for the socket bound to ``port`` (/proc/net/udp)."""
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                return int(fields[-1])
    return 0


# --- the import client (a child process)


def import_client(base: str, events: int, concurrency: int, file_kb: int, seed: int) -> None:
    """
    Push ``events`` new events, each with two files of ``file_kb`` KB, to ``base``'s import API
    with ``concurrency`` exports in flight, each following ``ExportProtocol``; print JSON
    figures (events/s, requests/s, latency per request kind).
    """
    import hashlib

    import treq
    from twisted.internet import defer, task
    from twisted.web.client import HTTPConnectionPool

    from meteord.exporter.protocol import (
        Done, ExportProtocol, SendCachedEntity, SendEntity, UploadFile)
    from meteord.model import Event, FileRecord, Meta

    rng = random.Random(seed)
    at = store_bench.END + timedelta(days=1)
    blobs: dict[str, bytes] = {}

    def new_event(index: int) -> dict[str, Any]:
        camera = store_bench.CAMERAS[index % len(store_bench.CAMERAS)]
        status_id = store_bench.entity_id("status", camera)
        when = at + timedelta(seconds=index)
        files = []
        for position in range(2):
            data = rng.randbytes(file_kb * 1000)
            file_id = uuid.UUID(int=rng.getrandbits(128)).hex
            blobs[file_id] = data
            files.append(FileRecord(
                file_id=file_id, camera_id=camera, mime_type="image/png",
                semantic_type="meteorpi:triggers/event", file_time=when, file_size=len(data),
                status_id=status_id, md5=hashlib.md5(data).hexdigest(),
                sha256=hashlib.sha256(data).hexdigest(), file_name=f"{position}.png"))
        return Event(event_id=uuid.UUID(int=rng.getrandbits(128)).hex, camera_id=camera,
                     event_time=when, event_type="meteorpi:meteor", status_id=status_id,
                     files=files, meta=[Meta(key="meteorpi:duration", type="number",
                                             value=1.5)]).to_dict()

    entities = [new_event(i) for i in range(events)]
    latencies: dict[str, list[float]] = {"message": [], "upload": []}
    failures: list[str] = []

    async def run(reactor: Any) -> None:
        pool = HTTPConnectionPool(reactor)
        pool.maxPersistentPerHost = concurrency
        auth = (IMPORT_USER, IMPORT_PASSWORD)
        queue = list(reversed(entities))

        async def request(kind: str, url: str, body: bytes, content_type: bytes) -> tuple:
            began = time.perf_counter()
            response = await treq.post(url, data=body, auth=auth, pool=pool,
                                       headers={b"Content-Type": [content_type]})
            content = await treq.content(response)
            latencies[kind].append(time.perf_counter() - began)
            return response.code, content

        async def exporter() -> None:
            while queue:
                entity = queue.pop()
                protocol = ExportProtocol("event", entity)
                action = protocol.start()
                while True:
                    if isinstance(action, (SendEntity, SendCachedEntity)):
                        code, content = await request(
                            "message", f"{base}/api/import",
                            json.dumps(action.body).encode(), b"application/json")
                    elif isinstance(action, UploadFile):
                        code, content = await request(
                            "upload", f"{base}/api/import/data/{action.file_id}/{action.md5}",
                            blobs[action.file_id], b"application/octet-stream")
                    else:
                        if not isinstance(action, Done):
                            failures.append(repr(action))
                        break
                    action = protocol.on_reply(code, content)

        began = time.perf_counter()
        await defer.gatherResults([defer.Deferred.fromCoroutine(exporter())
                                   for _ in range(concurrency)])
        elapsed = time.perf_counter() - began
        await pool.closeCachedConnections()
        requests = sum(len(v) for v in latencies.values())
        figures: dict[str, Any] = {
            "events": events, "seconds": elapsed, "events_per_s": events / elapsed,
            "requests": requests, "requests_per_s": requests / elapsed,
            "upload_mb_per_s": 2 * file_kb * 1000 * events / elapsed / 1e6,
            "failures": failures[:5], "failed": len(failures),
        }
        for kind, values in latencies.items():
            ordered = sorted(values)
            figures[kind] = {"n": len(ordered),
                             "p50": store_bench.percentile(ordered, 0.5) * 1000,
                             "p99": store_bench.percentile(ordered, 0.99) * 1000}
        print(json.dumps(figures))

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


# --- profiling


def profile(node: Node, py_spy: str, seconds: float, out: str, load: list[str]) -> None:
    """Sample the node with py-spy while ``load`` runs; write the raw (collapsed) stacks."""
    spy = subprocess.Popen([py_spy, "record", "-p", str(node.process.pid), "-r", "200",
                            "-d", f"{seconds + 1:g}", "-f", "raw", "-o", out, "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    subprocess.run(load, check=True, capture_output=True)
    spy.wait(60)


def summarise_profile(path: str, top: int = 12) -> str:
    """The functions with the most samples on the stack and at the top, from a raw profile."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            samples = int(count)
            total += samples
            frames = [re.sub(r" \(/.*/(site-packages|src|lib/python3\.\d+)/", " (", frame)
                      for frame in stack.split(";")]
            own[frames[-1]] = own.get(frames[-1], 0) + samples
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + samples
    lines = [f"    {total} samples; own time:"]
    for frame, samples in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"      {100 * samples / total:5.1f} %  {frame}")
    lines.append("    on the stack:")
    for frame, samples in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top * 2]:
        lines.append(f"      {100 * samples / total:5.1f} %  {frame}")
    return "\n".join(lines)


# --- the whole run


def row(name: str, figures: dict[str, Any], measured: Measured, extra: str = "") -> str:
    return (f"| {name} | {figures['rps']:,.0f} | {figures['p50']:.2f} | {figures['p99']:.2f} | "
            f"{extra} | {measured.rss_before:.1f} | {measured.rss_after:.1f} | "
            f"{measured.rss_peak:.1f} | {100 * measured.cpu:.0f} % |")


def reads(options: argparse.Namespace, work: str) -> None:
    file_id = prepare(options.database, options.files, options.events, user=False)
    paths = {
        "camera + 30 days, newest 20, count": search_paths(options.events, 20_000, "/api"),
        "event by id": event_paths(options.events, 50_000, "/api"),
        "file download, 5 MB": [f"/api/files/content/{file_id}"],
    }
    files = {}
    for name, listed in paths.items():
        files[name] = os.path.join(work, re.sub(r"\W+", "-", name) + ".txt")
        with open(files[name], "w") as f:
            f.write("\n".join(listed) + "\n")
    node = Node(options.database, options.files, work, "reads", options.access_log)
    try:
        time.sleep(2)
        print(f"\nreads: {options.connections} connections, {options.seconds:g} s each "
              f"(after {WARM_UP_SECONDS:g} s of warm-up); node idle RSS {node.rss():.1f} MiB\n")
        print("| load | requests/s | p50 ms | p99 ms | MB/s or loss | RSS before MiB | "
              "RSS after MiB | RSS peak MiB | node CPU |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        profiles = []
        for index, (name, paths_file) in enumerate(files.items()):
            if options.only and options.only not in name:
                continue
            wrk(options.wrk, node.base, paths_file, options.connections, WARM_UP_SECONDS,
                start=len(paths[name]) // 2)
            with Measured(node) as measured:
                figures = wrk(options.wrk, node.base, paths_file, options.connections,
                              options.seconds)
            extra = f"{figures['mbps']:,.0f} MB/s" if "download" in name else ""
            print(row(name, figures, measured, extra), flush=True)
            if figures["bad"] or figures["socket_errors"]:
                print(f"  !! {figures['bad']} responses not 2xx/3xx; socket errors "
                      f"{figures['socket_errors']}\n{figures['raw']}", flush=True)
            if options.profile:
                out = os.path.join(options.profile, re.sub(r"\W+", "-", name) + ".txt")
                profiles.append((name, out))
                profile(node, options.py_spy, options.seconds, out,
                        [options.wrk, "-t1", f"-c{options.connections}",
                         f"-d{options.seconds:g}s", "-s", LUA, node.base, "--", paths_file])
        if not options.only or "flood" in options.only:
            discovery_flood(options, node, files["event by id"])
        for name, out in profiles:
            print(f"\npy-spy, {name} (the node, {options.seconds:g} s at 200 Hz):")
            print(summarise_profile(out))
    finally:
        node.stop()


def discovery_flood(options: argparse.Namespace, node: Node, paths_file: str) -> None:
    """Event by id without, then with, a junk flood on the discovery port."""
    print(f"\nevent by id, without and with {options.flood_rate:,.0f} junk datagrams/s on the "
          f"discovery port:\n")
    print("| load | requests/s | p50 ms | p99 ms | datagrams sent/s, kernel drops | "
          "RSS before MiB | RSS after MiB | RSS peak MiB | node CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for repeat in range(options.flood_repeats):
        with Measured(node) as measured:
            figures = wrk(options.wrk, node.base, paths_file, options.connections,
                          options.seconds, start=repeat * 1000)
        print(row("event by id, no flood", figures, measured, ""), flush=True)
        drops_before = udp_drops(node.discovery_port)
        flooder = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "flood", str(node.discovery_port),
             str(options.flood_rate), str(options.seconds + 3)],
            stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)
            with Measured(node) as measured:
                figures = wrk(options.wrk, node.base, paths_file, options.connections,
                              options.seconds, start=repeat * 1000 + 500)
        finally:
            sent = json.loads(flooder.communicate(timeout=60)[0])
        drops = udp_drops(node.discovery_port) - drops_before
        extra = f"{sent['sent'] / sent['seconds']:,.0f}/s, {drops:,} dropped"
        print(row("event by id, junk flood", figures, measured, extra), flush=True)


def imports(options: argparse.Namespace, work: str) -> None:
    prepare(options.import_database, options.import_files, options.events, user=True)
    node = Node(options.import_database, options.import_files, work, "import",
                options.access_log)
    try:
        time.sleep(2)
        print(f"\nimport: {options.import_events:,} events with two {options.file_kb} KB files "
              f"each, {options.connections} exports in flight, one client process\n")
        idle = node.rss()
        # A short warm-up (authentication cache, prepared statements, connections).
        subprocess.run([sys.executable, os.path.abspath(__file__), "import-client", node.base,
                        "32", str(options.connections), str(options.file_kb), "1"],
                       check=True, capture_output=True)
        with Measured(node) as measured:
            output = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "import-client", node.base,
                 str(options.import_events), str(options.connections), str(options.file_kb),
                 "2"], check=True, capture_output=True, text=True).stdout
        figures = json.loads(output.strip().splitlines()[-1])
        print("| load | events/s | requests/s | upload MB/s | message p50/p99 ms | "
              "upload p50/p99 ms | RSS before MiB | RSS after MiB | RSS peak MiB | node CPU |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| import, 2 x {options.file_kb} KB files per event | "
              f"{figures['events_per_s']:,.1f} | {figures['requests_per_s']:,.0f} | "
              f"{figures['upload_mb_per_s']:,.1f} | "
              f"{figures['message']['p50']:.1f} / {figures['message']['p99']:.1f} | "
              f"{figures['upload']['p50']:.1f} / {figures['upload']['p99']:.1f} | "
              f"{measured.rss_before:.1f} | {measured.rss_after:.1f} | {measured.rss_peak:.1f} | "
              f"{100 * measured.cpu:.0f} % |")
        print(f"  (node RSS {idle:.1f} MiB idle, before the 32-event warm-up; "
              f"{figures['requests']:,} requests in {figures['seconds']:.1f} s; "
              f"{figures['failed']} events failed {figures['failures']})", flush=True)
        if options.profile:
            out = os.path.join(options.profile, "import.txt")
            profile(node, options.py_spy, options.seconds, out,
                    [sys.executable, os.path.abspath(__file__), "import-client", node.base,
                     str(max(64, int(options.seconds * figures["events_per_s"]))),
                     str(options.connections), str(options.file_kb), "3"])
            print("\npy-spy, import (the node):")
            print(summarise_profile(out))
    finally:
        node.stop()


def main(argv: list[str]) -> None:
    if argv[:1] == ["prepare"]:
        prepare_here(argv[1], argv[2], int(argv[3]), argv[4] == "user")
        return
    if argv[:1] == ["flood"]:
        flood(int(argv[1]), float(argv[2]), float(argv[3]))
        return
    if argv[:1] == ["import-client"]:
        import_client(argv[1], int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="URL of a store filled by store_bench")
    parser.add_argument("--files", required=True, help="that store's file directory")
    parser.add_argument("--events", type=int, required=True, help="N the store was filled with")
    parser.add_argument("--import-database", help="URL of a copy of the store to import into")
    parser.add_argument("--import-files", help="the copy's file directory")
    parser.add_argument("--import-events", type=int, default=1000)
    parser.add_argument("--file-kb", type=int, default=100, help="size of each imported file")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load")
    parser.add_argument("--flood-rate", type=float, default=20_000.0, help="junk datagrams/s")
    parser.add_argument("--flood-repeats", type=int, default=2)
    parser.add_argument("--only", default="", help="run only loads whose name has this "
                        "('flood', 'import', 'event', 'camera', 'download')")
    parser.add_argument("--access-log", choices=("log", "file", "off"), default="log",
                        help="the node's [http] access_log: its daemon log (the default), a "
                        "file in its data directory, or none")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--profile", metavar="DIR",
                        help="after each measured load, run it again under py-spy into DIR")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or os.path.join(
        os.path.dirname(sys.executable), "py-spy"))
    options = parser.parse_args(argv)
    if options.profile:
        os.makedirs(options.profile, exist_ok=True)
    work = tempfile.mkdtemp(prefix="meteord-http-bench-")
    try:
        if options.only != "import":
            reads(options, work)
        if options.import_database and (not options.only or options.only == "import"):
            imports(options, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
