"""
Replication throughput from a camera node to a hub over loopback.

The hub is a separate `twistd -n meteord` process (import API only) on SQLite or, with
`--hub-database postgresql`, on a throwaway PostgreSQL cluster (`meteord.testing.postgres`);
the camera node is this process: an SQLite store and an `ExporterService` on the real reactor,
so the RSS printed is the camera node's. Two phases, each timed from the exporter's first round
until every task is done: events (default 1,000 with two 100 KB files each), then stand-alone
large files (default 20 of 50 MB); a phase of zero entities is skipped. Prints entities/s,
MB/s, round trips per entity, the CPU each process used and the camera node's RSS: at the
phase's start, the highest sampled every 0.1 s during it, at its end, and the process's peak
(which includes setting up the phase: the bench writes and registers the files first).

Leave 75 s between runs. Each run deletes its thousands of files when it ends, and on an ext4
without a journal (the reference machine's) every file created in the next 60 s makes the
kernel step over the inodes deleted in that time (``recently_deleted``): run back to back, the
hub spent about 8 % of the machine there during the events phase.

    PYTHONPATH=. python bench/replication_bench.py [--events N] [--event-file-kb K]
        [--large-files N] [--large-mb M] [--concurrency C] [--hub-database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react

from meteord.exporter.policy import FailurePolicy
from meteord.exporter.service import ExporterService
from meteord.model import (
    CameraStatus, EventSearch, ExportConfiguration, FileRecordSearch, Location, Orientation,
    new_id)
from meteord.store.sql import open_store

CAMERA = "0123456789ab"
T0 = datetime(2024, 3, 1, 20, tzinfo=timezone.utc)
MB = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mib() -> tuple[float, float]:
    """This process's resident set size and its peak, in MiB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time used so far by process `pid` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hub_database_url(kind: str) -> Optional[str]:
    """The hub's database: None for its default SQLite file, else a fresh PostgreSQL one."""
    if kind == "sqlite":
        return None
    from meteord.testing.postgres import shared_cluster

    return shared_cluster().create_database()


def start_hub(data_dir: str, port: int, database: Optional[str]
              ) -> tuple[subprocess.Popen, str]:
    """Start the hub; return it and its initial admin password (the admin may import)."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repository}
    database_option = [] if database is None else ["--database", database]
    process = subprocess.Popen(
        [twistd, "-n", "--pidfile=", "meteord", "--data-dir", data_dir, *database_option,
         "--http", f"tcp:{port}:interface=127.0.0.1", "--apis", "import", "--no-discovery",
         "--no-exporter"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=data_dir)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/healthz") as r:
                json.load(r)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise SystemExit("the hub did not answer /api/healthz")
            time.sleep(0.2)
    with open(os.path.join(data_dir, "initial-admin-password")) as f:
        return process, f.read().strip()


def write_random(path: str, size: int) -> None:
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 1 << 20))
            f.write(chunk)
            remaining -= len(chunk)


async def register_files(store: Any, work: str, count: int, size: int, prefix: str,
                         start: datetime) -> list:
    records = []
    for i in range(count):
        path = os.path.join(work, f"{prefix}{i}")
        write_random(path, size)
        records.append(await store.register_file(
            path, "video/mp4", "meteorpi:video", start + timedelta(seconds=i), [],
            camera_id=CAMERA, file_name=f"{prefix}{i}.mp4"))
    return records


async def replicate(reactor: Any, store: Any, config: ExportConfiguration, tasks: int,
                    concurrency: int, hub_pid: int) -> dict[str, float]:
    """Run an exporter until `tasks` tasks of `config` are done; return what it measured."""
    await store.create_or_update_export_configuration(config)
    exporter = ExporterService(store, reactor, concurrency=concurrency, batch_size=100,
                               mark_interval=300.0, failure_policy=FailurePolicy())
    rss_at_start = highest_rss = memory_mib()[0]
    cpu_before = cpu_seconds(os.getpid()), cpu_seconds(hub_pid)
    started = time.monotonic()
    exporter.startService()
    while True:
        status = await store.get_export_status(config.config_id)
        if status.done + status.failed >= tasks and not status.pending:
            break
        await deferLater(reactor, 0.1)
        highest_rss = max(highest_rss, memory_mib()[0])
    elapsed = time.monotonic() - started
    camera_cpu = cpu_seconds(os.getpid()) - cpu_before[0]
    hub_cpu = cpu_seconds(hub_pid) - cpu_before[1]
    await exporter.stopService()
    totals = exporter.totals()
    rss, peak = memory_mib()
    return {
        "entities": tasks, "failed": status.failed, "seconds": elapsed,
        "entities_per_second": tasks / elapsed, "megabytes": totals.bytes_sent / MB,
        "mb_per_second": totals.bytes_sent / MB / elapsed,
        "round_trips_per_entity": totals.round_trips / tasks,
        "transport_failures": totals.transport_failures, "rss_mib": rss, "peak_rss_mib": peak,
        "rss_at_start_mib": rss_at_start, "highest_rss_mib": highest_rss,
        "camera_cpu_cores": camera_cpu / elapsed, "hub_cpu_cores": hub_cpu / elapsed,
    }


def export(kind: str, target: str, password: str) -> ExportConfiguration:
    return ExportConfiguration(
        config_id=new_id(), type=kind, target_url=target, user_id="admin", password=password,
        search=EventSearch() if kind == "event" else FileRecordSearch(),
        config_name=f"bench {kind}s", config_description="", enabled=True)


async def run(reactor: Any, options: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as root:
        hub_dir, camera_dir, work = (os.path.join(root, d) for d in ("hub", "camera", "work"))
        for d in (hub_dir, camera_dir, work):
            os.makedirs(d)
        port = free_port()
        hub, password = start_hub(hub_dir, port, hub_database_url(options.hub_database))
        target = f"http://127.0.0.1:{port}/api/import"
        store = await open_store(f"sqlite:///{camera_dir}/camera.sqlite3",
                                 os.path.join(camera_dir, "files"), default_camera_id=CAMERA,
                                 reactor=reactor)
        try:
            await store.update_camera_status(CameraStatus(
                camera_id=CAMERA, status_id=new_id(), lens="lens", sensor="sensor",
                software_version=1, valid_from=T0,
                location=Location(lat=52.2, long=0.1, gps=False, error=1.0),
                orientation=Orientation(alt=45.0, az=180.0, error=1.0, rot=0.0, width=30.0)),
                T0, CAMERA)
            print(f"camera node RSS at start: {memory_mib()[0]:.1f} MiB", flush=True)
            results = {}
            if options.events:
                for i in range(options.events):
                    when = T0 + timedelta(seconds=10 * i)
                    files = await register_files(store, work, 2, options.event_file_kb * 1000,
                                                 f"e{i}-", when)
                    await store.register_event(CAMERA, when, "meteorpi:meteor", files)
                results["events"] = await replicate(
                    reactor, store, export("event", target, password), options.events,
                    options.concurrency, hub.pid)
                print(json.dumps(results["events"]), flush=True)
            if options.large_files:
                await register_files(store, work, options.large_files, options.large_mb * MB,
                                     "large", T0 + timedelta(days=1))
                results["large files"] = await replicate(
                    reactor, store, export("file", target, password), options.large_files,
                    options.concurrency, hub.pid)
                print(json.dumps(results["large files"]), flush=True)
        finally:
            await store.close()
            hub.terminate()
            hub.wait(30)
    print()
    print(f"hub on {options.hub_database}, concurrency {options.concurrency}")
    print("| phase | entities | seconds | entities/s | MB sent | MB/s | round trips/entity "
          "| camera RSS MiB: start, highest, end (process peak) | CPU cores camera / hub |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        if r["failed"] or r["transport_failures"]:
            print(f"| {name}: {r['failed']} tasks failed, {r['transport_failures']} transport "
                  f"failures: figures not valid |")
        print(f"| {name} | {r['entities']} | {r['seconds']:.1f} | "
              f"{r['entities_per_second']:.1f} | {r['megabytes']:.0f} | "
              f"{r['mb_per_second']:.1f} | {r['round_trips_per_entity']:.2f} | "
              f"{r['rss_at_start_mib']:.0f}, {r['highest_rss_mib']:.0f}, {r['rss_mib']:.0f} "
              f"({r['peak_rss_mib']:.0f}) | "
              f"{r['camera_cpu_cores']:.2f} / {r['hub_cpu_cores']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--event-file-kb", type=int, default=100)
    parser.add_argument("--large-files", type=int, default=20)
    parser.add_argument("--large-mb", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--hub-database", choices=("sqlite", "postgresql"), default="sqlite")
    options = parser.parse_args()

    def go(reactor: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(run(reactor, options))

    react(go)


if __name__ == "__main__":
    main()
