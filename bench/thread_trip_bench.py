"""
The CPU one trip to a thread pool and back costs here: a trivial call through
`deferToThreadPool`, 16 at a time, as the store and the file store make them.

The figure moves with the speed of the machine at the moment, not with meteord's code, so it
is a yardstick: run it next to a comparison of two commits to see how fast the VM was.

    PYTHONPATH=. python bench/thread_trip_bench.py [--trips N]
"""

from __future__ import annotations

import argparse
import resource
import time

from twisted.internet import task, threads
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.python.threadpool import ThreadPool

CONCURRENCY = 16


async def _trips(reactor: object, pool: ThreadPool, count: int) -> None:
    for _ in range(count):
        await threads.deferToThreadPool(reactor, pool, len, "x")


async def main(reactor: object, trips: int) -> None:
    pool = ThreadPool(1, 4, name="trips")
    pool.start()
    try:
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        await gatherResults([ensureDeferred(_trips(reactor, pool, trips // CONCURRENCY))
                             for _ in range(CONCURRENCY)])
        after, ended = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    finally:
        pool.stop()
    done = trips // CONCURRENCY * CONCURRENCY
    user = (after.ru_utime - before.ru_utime) * 1e6 / done
    system = (after.ru_stime - before.ru_stime) * 1e6 / done
    switches = (after.ru_nvcsw - before.ru_nvcsw + after.ru_nivcsw - before.ru_nivcsw) / done
    print(f"{done} trips in {ended - started:.2f} s: {user + system:.0f} µs of CPU a trip "
          f"(user {user:.0f}, system {system:.0f}), {switches:.1f} context switches a trip")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--trips", type=int, default=20_000)
    arguments = parser.parse_args()
    if arguments.trips < CONCURRENCY:
        parser.error(f"--trips must be at least {CONCURRENCY}")
    task.react(main, (arguments.trips,))
