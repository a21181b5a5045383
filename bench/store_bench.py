"""
How fast the SQL store answers the searches the query API makes, on a store of N events.

Fills a store with a generated network of 20 cameras (each event with 3-5 metas and 1-3 file
records, rows only, no bytes) through ``SQLStore.bulk_insert``, then measures three store-level
reads under the real reactor, each for a fixed time with a number of concurrent callers: the 20
newest events of one camera in a 30-day window with the total count; events whose duration meta
is above a value in a 7-day window, limit 100, with the count; one event by id. Prints
queries/s and p50/p99 latency per read.

The network records events at a fixed rate (2,500 a day in all), so N sets how long a history
the store holds, not how dense it is: each window matches about as many events at 100,000 as
at 1,000,000, and any latency that grows with N means a scan that grows with the store.

    python bench/store_bench.py --backend sqlite --events 100000 --keep /some/dir
    python bench/store_bench.py --backend postgresql --events 1000000 --concurrency 8

``--keep DIR`` keeps the filled database in DIR (an SQLite file, or a PostgreSQL cluster
directory) and reuses it on the next run with the same back end and N; without it the data
goes to a temporary directory (PostgreSQL: `meteord.testing.postgres.shared_cluster`) that is
removed at exit. ``--shared-buffers SIZE`` starts a kept PostgreSQL cluster with that
``shared_buffers`` (the server's default is 128MB; an operator sizes it to the machine's RAM).
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import os
import pwd
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from twisted.internet import defer, task

from meteord.model import (
    CameraStatus,
    Event,
    EventSearch,
    FileRecord,
    Location,
    Meta,
    MetaConstraint,
    Orientation,
)
from meteord.store.sql import SQLStore, open_store

CAMERAS = [f"cam{number:03d}" for number in range(20)]
EVENTS_PER_DAY = 2500
END = datetime(2024, 1, 1, tzinfo=timezone.utc)
DAY_MS = 86_400_000
BATCH = 5000
SEED = "meteord store bench"
DURATION_KEY = "meteorpi:duration"
# Durations are uniform on [0.2, 5.0) s, so about 5 % of events are above this.
DURATION_ABOVE = 4.76
OTHER_METAS = ("meteorpi:brightness", "meteorpi:frames", "meteorpi:classification",
               "meteorpi:detected_at")
FILE_KINDS = (
    ("image/png", "meteorpi:triggers/event/maxBrightness/lensCorr"),
    ("video/mp4", "meteorpi:triggers/event"),
    ("image/png", "meteorpi:triggers/event/previous"),
)
WARM_UP_SECONDS = 1.0
ID_SAMPLE = 50_000  # random events that "event by id" reads, as http_bench.py's list


def entity_id(*parts: object) -> str:
    """A reproducible 32-hex id, so a kept database's ids are known without reading them."""
    return hashlib.md5(":".join(map(str, (SEED, *parts))).encode()).hexdigest()


def span_ms(events: int) -> int:
    """How long a history ``events`` events make at the network's rate."""
    return events * DAY_MS // EVENTS_PER_DAY


def start_ms(events: int) -> int:
    return int(END.timestamp() * 1000) - span_ms(events)


def statuses(events: int) -> list[CameraStatus]:
    """One status per camera, in force from before the first event."""
    valid_from = datetime.fromtimestamp(start_ms(events) / 1000 - 86400, timezone.utc)
    return [
        CameraStatus(
            camera_id=camera, status_id=entity_id("status", camera), lens="bench lens",
            sensor="bench sensor", software_version=1, valid_from=valid_from,
            location=Location(lat=52.0 + index / 10, long=0.1 * index, gps=True, error=5.0),
            orientation=Orientation(alt=90.0, az=0.0, error=1.0, rot=0.0, width=80.0),
        )
        for index, camera in enumerate(CAMERAS)
    ]


def event_batch(events: int, first: int, count: int) -> list[Event]:
    """Events ``first`` to ``first + count - 1`` of the data set, in time order."""
    start, step = start_ms(events), span_ms(events) / events
    batch = []
    for index in range(first, first + count):
        rng = random.Random(index)
        camera = CAMERAS[rng.randrange(len(CAMERAS))]
        at = datetime.fromtimestamp((start + int(index * step) + rng.randrange(1000)) / 1000,
                                    timezone.utc)
        metas = [Meta(key=DURATION_KEY, type="number", value=rng.uniform(0.2, 5.0))]
        for key in rng.sample(OTHER_METAS, rng.randint(2, 4)):
            if key == "meteorpi:classification":
                metas.append(Meta(key=key, type="string", value=rng.choice(("meteor", "plane"))))
            elif key == "meteorpi:detected_at":
                metas.append(Meta(key=key, type="date", value=at))
            else:
                metas.append(Meta(key=key, type="number", value=rng.uniform(0, 1000)))
        files = [
            FileRecord(
                file_id=entity_id("file", index, position), camera_id=camera,
                mime_type=mime_type, semantic_type=semantic_type, file_time=at,
                file_size=rng.randrange(10_000, 5_000_000), status_id=entity_id("status", camera),
                md5=entity_id("md5", index, position),
                file_name=f"{index}_{position}.{mime_type.split('/')[1]}",
            )
            for position, (mime_type, semantic_type) in enumerate(FILE_KINDS[:rng.randint(1, 3)])
        ]
        batch.append(Event(
            event_id=entity_id("event", index), camera_id=camera, event_time=at,
            event_type="meteorpi:meteor", status_id=entity_id("status", camera),
            files=files, meta=metas,
        ))
    return batch


async def stored_events(store: SQLStore) -> int:
    return (await store.search_events(EventSearch(limit=1)))["count"]


async def fill(store: SQLStore, events: int) -> None:
    """Insert the data set through the store's bulk path, reporting the rate as it goes."""
    await store.bulk_insert(statuses=statuses(events))
    began = time.perf_counter()
    build = 0.0
    for first in range(0, events, BATCH):
        built = time.perf_counter()
        batch = event_batch(events, first, min(BATCH, events - first))
        build += time.perf_counter() - built
        await store.bulk_insert(events=batch)
        done = first + len(batch)
        if done % (BATCH * 20) == 0 or done == events:
            elapsed = time.perf_counter() - began
            print(f"  filled {done:,} events in {elapsed:.0f} s ({done / elapsed:,.0f}/s; "
                  f"{build:.0f} s of it building entities)", flush=True)


def maintain(backend: str, url: str) -> None:
    """
    What an operator does after a bulk load (and after a schema migration adds an index):
    refresh the planner's statistics, and on PostgreSQL set the visibility map, which
    autovacuum would do a little later. Cheap when nothing changed.
    """
    began = time.perf_counter()
    if backend == "sqlite":
        import sqlite3

        connection = sqlite3.connect(url[len("sqlite:///"):])
        connection.execute("PRAGMA analysis_limit = 1000")
        connection.execute("ANALYZE")
        connection.close()
    else:
        import psycopg2

        from meteord.store._sql import postgres_connect_kwargs

        connection = psycopg2.connect(**postgres_connect_kwargs(url))
        connection.autocommit = True
        with connection.cursor() as cursor:
            # Right after a load some pages cannot be marked all-visible yet (the cluster
            # commits asynchronously); a later pass can, as autovacuum's would.
            for _ in range(5):
                cursor.execute("VACUUM (ANALYZE)")
                cursor.execute("SELECT relallvisible, relpages FROM pg_class "
                               "WHERE relname = %s", ("events",))
                visible, pages = cursor.fetchone()
                if visible >= pages:
                    break
                time.sleep(1)
        connection.close()
        print(f"  events: {visible} of {pages} pages all-visible", flush=True)
    print(f"  analyzed in {time.perf_counter() - began:.0f} s", flush=True)


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def measure(
    reactor: Any, call: Callable[[random.Random], Awaitable[int]], seconds: float,
    concurrency: int,
) -> dict[str, float]:
    """
    ``concurrency`` callers each awaiting ``call`` in a loop for ``seconds`` (after a short
    warm-up that is not counted): queries/s, p50 and p99 latency in ms, mean result size.
    """
    latencies: list[float] = []
    sizes: list[int] = []
    deadline = [0.0]

    async def caller(number: int) -> None:
        rng = random.Random(number)
        while time.perf_counter() < deadline[0]:
            began = time.perf_counter()
            size = await call(rng)
            latencies.append(time.perf_counter() - began)
            sizes.append(size)

    deadline[0] = time.perf_counter() + WARM_UP_SECONDS
    await defer.gatherResults([defer.Deferred.fromCoroutine(caller(n))
                               for n in range(concurrency)])
    latencies.clear()
    sizes.clear()
    began = time.perf_counter()
    deadline[0] = began + seconds
    await defer.gatherResults([defer.Deferred.fromCoroutine(caller(n + concurrency))
                               for n in range(concurrency)])
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "qps": len(latencies) / elapsed,
        "p50": percentile(ordered, 0.50) * 1000,
        "p99": percentile(ordered, 0.99) * 1000,
        "size": statistics.fmean(sizes) if sizes else 0.0,
        "n": len(latencies),
    }


def reads(store: SQLStore, events: int) -> dict[str, Callable[[random.Random], Awaitable[int]]]:
    """The measured reads, each returning a size to show what it found."""
    first, last = start_ms(events), start_ms(events) + span_ms(events)

    def window_before(rng: random.Random, days: int) -> tuple[datetime, datetime]:
        before = rng.randrange(min(first + days * DAY_MS, last), last + 1)
        return (datetime.fromtimestamp((before - days * DAY_MS) / 1000, timezone.utc),
                datetime.fromtimestamp(before / 1000, timezone.utc))

    async def camera_window(rng: random.Random) -> int:
        after, before = window_before(rng, 30)
        result = await store.search_events(EventSearch(
            camera_ids=[rng.choice(CAMERAS)], after=after, before=before, limit=20))
        assert len(result["events"]) == min(20, result["count"])
        return result["count"]

    async def duration_window(rng: random.Random) -> int:
        after, before = window_before(rng, 7)
        result = await store.search_events(EventSearch(
            after=after, before=before, limit=100,
            meta=[MetaConstraint(key=DURATION_KEY, type="greater", value=DURATION_ABOVE)]))
        assert len(result["events"]) == min(100, result["count"])
        return result["count"]

    # Made before the measurement: hashing an id per call would be timed with the store.
    some_ids = [entity_id("event", number) for number in
                random.Random(SEED).sample(range(events), min(events, ID_SAMPLE))]

    async def event_by_id(rng: random.Random) -> int:
        event = await store.get_event(rng.choice(some_ids))
        assert event is not None
        return len(event.files) + len(event.meta)

    return {
        "camera + 30 days, newest 20, count": camera_window,
        "duration meta + 7 days, limit 100, count": duration_window,
        "event by id": event_by_id,
    }


def postgres_cluster(keep: str | None, shared_buffers: str | None = None) -> Any:
    """
    A running cluster: the process's throwaway one, or one kept in ``keep`` (started with
    ``shared_buffers`` when given).
    """
    from meteord.testing import postgres

    if keep is None:
        return postgres.shared_cluster()
    directory = os.path.abspath(keep)
    run_as = "postgres" if os.geteuid() == 0 else None
    new = not os.path.isdir(os.path.join(directory, "data"))
    os.makedirs(directory, exist_ok=True)
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    bin_dir = postgres.find_binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL server binaries not found")
    settings = {} if shared_buffers is None else {"shared_buffers": shared_buffers}
    cluster = postgres.PostgresCluster(bin_dir=bin_dir, directory=directory, run_as=run_as,
                                       settings=settings)
    if new:
        cluster.start()
    else:
        cluster._run_pg_ctl("start")
    atexit.register(cluster._run_pg_ctl, "stop")
    return cluster


def database_url(backend: str, events: int, keep: str | None,
                 shared_buffers: str | None = None) -> tuple[str, str]:
    """The store's database URL and a directory for its (unused) file store."""
    if keep is None:
        directory = tempfile.mkdtemp(prefix="meteord-store-bench-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    else:
        directory = os.path.abspath(keep)
        os.makedirs(directory, exist_ok=True)
    files = os.path.join(directory, "files")
    if backend == "sqlite":
        return f"sqlite:///{os.path.join(directory, f'bench-{events}.sqlite3')}", files
    cluster = postgres_cluster(keep, shared_buffers)
    if keep is None:
        return cluster.create_database(), files
    import psycopg2

    name = f"bench_{events}"
    connection = psycopg2.connect(**cluster.connect_kwargs())
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if not cursor.fetchall():
            cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return cluster.url(name), files


async def run(reactor: Any, options: argparse.Namespace) -> None:
    url, files = database_url(options.backend, options.events, options.keep,
                              options.shared_buffers)
    pool_size = options.pool_size or options.concurrency
    store = await open_store(url, files, pool_size=pool_size, reactor=reactor)
    stored = await stored_events(store)
    if stored == 0:
        print(f"filling {options.backend} with {options.events:,} events", flush=True)
        await fill(store, options.events)
    elif stored != options.events:
        await store.close()
        raise SystemExit(f"the kept database holds {stored:,} events, not {options.events:,}")
    else:
        print(f"reusing {options.backend} with {stored:,} events", flush=True)
    await store.close()
    maintain(options.backend, url)
    store = await open_store(url, files, pool_size=pool_size, reactor=reactor)
    try:
        print(f"\n{options.backend}, N = {options.events:,}, concurrency "
              f"{options.concurrency}, {options.seconds:g} s per read\n")
        print("| read | queries/s | p50 ms | p99 ms | mean matches or items |")
        print("|---|---:|---:|---:|---:|")
        for name, call in reads(store, options.events).items():
            if options.only and options.only not in name:
                continue
            figures = await measure(reactor, call, options.seconds, options.concurrency)
            print(f"| {name} | {figures['qps']:,.0f} | {figures['p50']:.2f} | "
                  f"{figures['p99']:.2f} | {figures['size']:,.0f} |", flush=True)
    finally:
        await store.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--events", type=int, default=100_000, help="N, events in the store")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument("--concurrency", type=int, default=4, help="callers at once")
    parser.add_argument("--pool-size", type=int, default=0,
                        help="PostgreSQL connections (default: the concurrency)")
    parser.add_argument("--keep", metavar="DIR", help="keep and reuse the filled database here")
    parser.add_argument("--only", default="", help="measure only reads whose name has this")
    parser.add_argument("--shared-buffers", metavar="SIZE",
                        help="PostgreSQL's shared_buffers for a --keep cluster (default 128MB)")
    options = parser.parse_args(argv)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, options)))


if __name__ == "__main__":
    main(sys.argv[1:])
