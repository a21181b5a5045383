"""
HTTP latency of one meteord process at a fixed, moderate request rate, without and with a
flood of junk datagrams on its discovery port.

``http_bench.py`` drives the node with ``wrk`` as fast as it can (closed loop, 16
connections): that measures capacity, and at saturation any extra work (such as a discovery
flood) shows up one for one. This benchmark measures what an operator sees at a load that
leaves the node headroom: ``GET /api/events/id/{id}`` (random events of the data set) sent
*open loop* at a fixed rate (default 200 and 400 requests/s) over persistent connections, by a
separate client process (``client`` below), for ``--seconds`` (default 25) per measurement,
without and with the junk flood of ``http_bench.py`` (the even mix of ``discovery_bench.py``,
default 20,000 datagrams/s, paced by a child process), ``--repeats`` times (default 3, in the
order none/flood, flood/none, none/flood so that a drift does not favour one side). Before
that (``--idle-flood``, default 5 s, three times) it measures the CPU the node uses for the
flood alone, with no HTTP load.

The client schedules request *i* at ``start + i / rate`` and measures its latency from that
planned time, not from when it was actually written, so a stall of the node (or of the client)
delays every request planned during it and is counted in full (no coordinated omission, as in
wrk2). Requests wait in one queue for the first of ``--connections`` (default 16) persistent
connections that is free; a ticker thread (``time.sleep``, not the event loop's millisecond
timer) releases them at their planned times. It also reports the service time (from the
actual write of the request to the end of the response) and how late the client itself wrote
requests, so that the client's own delays can be told apart.

Run it alone and with only loopback, like ``http_bench.py``:

    flock -o /tmp/bench.lock unshare -n sh -c 'ip link set lo up && exec python \\
        bench/latency_bench.py --database sqlite:///DIR/bench-1000000.sqlite3 \\
        --files DIR/files --events 1000000'

No side effect on the data set (reads only; a node creates the user ``admin`` at its first
start on a database without users).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import http_bench  # noqa: E402  (the node, the flooder, kernel drops)
import store_bench  # noqa: E402  (the data set's ids)

HTTP_BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "http_bench.py")
DRAIN_SECONDS = 30.0  # at most how long the client waits for answers after the last planned request
FLOOD_LEAD_SECONDS = 1.5  # the flood runs this long before the measurement starts


# --- the open-loop client (a child process)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {"p50": store_bench.percentile(ordered, 0.5) * 1000,
            "p90": store_bench.percentile(ordered, 0.9) * 1000,
            "p99": store_bench.percentile(ordered, 0.99) * 1000,
            "p999": store_bench.percentile(ordered, 0.999) * 1000,
            "max": ordered[-1] * 1000, "mean": sum(ordered) / len(ordered) * 1000}


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One HTTP/1.1 response: its status, and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        raise ValueError("a response without a length")
    return status, headers.get("connection") == "close"


def client(base: str, rate: float, seconds: float, connections: int, seed: int,
           events: int) -> None:
    """
    Send ``rate * seconds`` GETs of random events open loop at ``rate``/s over ``connections``
    persistent connections; print JSON figures.
    """
    host, port = base.removeprefix("http://").split(":")
    rng = random.Random(seed)
    count = int(rate * seconds)
    requests = [(f"GET /api/events/id/{store_bench.entity_id('event', rng.randrange(events))} "
                 f"HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").encode() for _ in range(count)]
    latency: list[float] = []  # from the planned send time to the end of the response
    service: list[float] = []  # from the actual write to the end of the response
    lag: list[float] = []  # how late the client wrote the request
    statuses: dict[int, int] = {}
    errors: list[str] = []
    reconnects = [0]

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        streams = [await asyncio.open_connection(host, int(port)) for _ in range(connections)]
        done = asyncio.Event()
        finished = [0]

        async def worker(index: int) -> None:
            reader, writer = streams[index]
            while True:
                item = await queue.get()
                if item is None:
                    return
                number, planned = item
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, int(port))
                        reconnects[0] += 1
                    sent = time.perf_counter()
                    writer.write(requests[number])
                    status, close = await read_response(reader)
                    ended = time.perf_counter()
                    statuses[status] = statuses.get(status, 0) + 1
                    latency.append(ended - planned)
                    service.append(ended - sent)
                    lag.append(sent - planned)
                    if close:
                        writer.close()
                        writer = None
                except (OSError, ValueError, asyncio.IncompleteReadError) as e:
                    errors.append(repr(e))
                    if writer is not None:
                        writer.close()
                    writer = None
                finished[0] += 1
                if finished[0] == count:
                    done.set()

        workers = [asyncio.ensure_future(worker(i)) for i in range(connections)]
        began = time.perf_counter() + 0.2
        stop = threading.Event()

        def ticker() -> None:
            # Releases request i at began + i / rate; time.sleep is precise to tens of µs, the
            # event loop's own timers only to a millisecond (epoll).
            for number in range(count):
                planned = began + number / rate
                delay = planned - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if stop.is_set():
                    return
                loop.call_soon_threadsafe(queue.put_nowait, (number, planned))

        thread = threading.Thread(target=ticker, daemon=True)
        thread.start()
        try:
            await asyncio.wait_for(done.wait(), seconds + 0.2 + DRAIN_SECONDS)
        except asyncio.TimeoutError:
            pass
        elapsed = time.perf_counter() - began
        stop.set()
        thread.join(5)
        for _ in workers:
            queue.put_nowait(None)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for _, writer in streams:
            writer.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"planned": count, "answered": len(latency), "seconds": elapsed,
                "rate": rate, "achieved_rate": len(latency) / elapsed,
                "statuses": statuses, "errors": len(errors), "error_samples": errors[:3],
                "unanswered": count - len(latency) - len(errors),
                "reconnects": reconnects[0],
                "latency": percentiles(latency), "service": percentiles(service),
                "lag": percentiles(lag),
                "client_cpu": (usage.ru_utime + usage.ru_stime)}

    figures = asyncio.run(run())
    print(json.dumps(figures))


# --- one measurement, the whole run


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(options: argparse.Namespace, node: http_bench.Node, rate: float, seconds: float,
            seed: int, flood: bool) -> dict[str, Any]:
    """One client run against ``node``, with or without a junk flood; JSON figures."""
    flooder = None
    drops_before = http_bench.udp_drops(node.discovery_port)
    if flood:
        flooder = subprocess.Popen(
            [sys.executable, HTTP_BENCH, "flood", str(node.discovery_port),
             str(options.flood_rate), str(seconds + FLOOD_LEAD_SECONDS + 3 + 2)],
            stdout=subprocess.PIPE, text=True)
        time.sleep(FLOOD_LEAD_SECONDS)
    try:
        flooder_cpu = process_cpu(flooder.pid) if flooder else 0.0
        load_before = os.getloadavg()[0]
        with http_bench.Measured(node) as measured:
            output = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "client", node.base, str(rate),
                 str(seconds), str(options.connections), str(seed), str(options.events)],
                check=True, capture_output=True, text=True,
                timeout=seconds + DRAIN_SECONDS + 60).stdout
            if flooder:
                flooder_cpu = process_cpu(flooder.pid) - flooder_cpu
    finally:
        sent = json.loads(flooder.communicate(timeout=60)[0]) if flooder else None
    figures = json.loads(output.strip().splitlines()[-1])
    figures.update({
        "flood": flood, "node_cpu": measured.cpu, "rss_before": measured.rss_before,
        "rss_after": measured.rss_after, "rss_peak": measured.rss_peak,
        "drops": http_bench.udp_drops(node.discovery_port) - drops_before,
        "load_before": load_before,
        "flooder_cpu": flooder_cpu / measured.elapsed if flooder else 0.0,
        "client_cpu": figures["client_cpu"] / measured.elapsed,
        "sent_per_s": sent["sent"] / sent["seconds"] if sent else 0.0,
        "send_failed": sent["failed"] if sent else 0,
    })
    return figures


def idle_flood(options: argparse.Namespace, node: http_bench.Node, seconds: float) -> str:
    """The node's CPU with the flood alone (no HTTP), over ``seconds``; one table row."""
    drops_before = http_bench.udp_drops(node.discovery_port)
    flooder = subprocess.Popen(
        [sys.executable, HTTP_BENCH, "flood", str(node.discovery_port), str(options.flood_rate),
         str(seconds + FLOOD_LEAD_SECONDS + 0.5)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(FLOOD_LEAD_SECONDS)
        flooder_cpu = process_cpu(flooder.pid)
        with http_bench.Measured(node) as measured:
            time.sleep(seconds)
        flooder_cpu = process_cpu(flooder.pid) - flooder_cpu
    finally:
        sent = json.loads(flooder.communicate(timeout=60)[0])
    drops = http_bench.udp_drops(node.discovery_port) - drops_before
    return (f"| {sent['sent'] / sent['seconds']:,.0f}/s | {drops:,} | "
            f"{100 * measured.cpu:.0f} % | {100 * flooder_cpu / measured.elapsed:.0f} % |")


def row(figures: dict[str, Any], repeat: int) -> str:
    l, s, g = figures["latency"], figures["service"], figures["lag"]
    flood = (f"{figures['sent_per_s']:,.0f}/s, {figures['drops']:,} dropped"
             if figures["flood"] else "none")
    bad = sum(n for code, n in figures["statuses"].items() if int(code) != 200)
    return (f"| {figures['rate']:.0f} | {repeat} | {flood} | {figures['achieved_rate']:,.1f} | "
            f"{l['p50']:.2f} | {l['p90']:.2f} | {l['p99']:.2f} | {l['p999']:.1f} | "
            f"{l['max']:.1f} | {s['p50']:.2f} / {s['p99']:.2f} | {g['p50']:.2f} / {g['p99']:.2f} | "
            f"{100 * figures['node_cpu']:.0f} % | {100 * figures['flooder_cpu']:.0f} % | "
            f"{100 * figures['client_cpu']:.0f} % | "
            f"{bad + figures['errors'] + figures['unanswered']} |")


def summary(results: list[dict[str, Any]], rates: list[float], flood_rate: float) -> list[str]:
    """Per rate: the median over repeats of each percentile, without and with the flood."""
    lines = ["| rate/s | flood | runs | p50 ms | p90 ms | p99 ms | p50 ratio | p90 ratio | "
             "p99 ratio |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rate in rates:
        medians = {}
        for flood in (False, True):
            runs = [r for r in results if r["rate"] == rate and r["flood"] is flood]
            if not runs:
                continue
            medians[flood] = {p: sorted(r["latency"][p] for r in runs)[len(runs) // 2]
                              for p in ("p50", "p90", "p99")}
            ratio = ""
            if flood and False in medians:
                ratio = " | ".join(f"{medians[True][p] / medians[False][p]:.2f}x"
                                   for p in ("p50", "p90", "p99"))
            else:
                ratio = " | | "
            lines.append(f"| {rate:.0f} | {f'{flood_rate:,.0f} junk/s' if flood else 'none'} | {len(runs)} | "
                         f"{medians[flood]['p50']:.2f} | {medians[flood]['p90']:.2f} | "
                         f"{medians[flood]['p99']:.2f} | {ratio} |")
    return lines


def main(argv: list[str]) -> None:
    if argv[:1] == ["client"]:
        client(argv[1], float(argv[2]), float(argv[3]), int(argv[4]), int(argv[5]),
               int(argv[6]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="URL of a store filled by store_bench")
    parser.add_argument("--files", required=True, help="that store's file directory")
    parser.add_argument("--events", type=int, required=True, help="N the store was filled with")
    parser.add_argument("--rates", default="200,400", help="requests/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=25.0, help="length of each measurement")
    parser.add_argument("--warm-up", type=float, default=10.0,
                        help="seconds at each rate before its measurements, not counted")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--flood-rate", type=float, default=20_000.0, help="junk datagrams/s")
    parser.add_argument("--idle-flood", type=float, default=5.0, metavar="SECONDS",
                        help="first, the node's CPU with the flood alone (no HTTP), 3 times; 0: no")
    parser.add_argument("--json", metavar="FILE", help="also write every run's figures here")
    options = parser.parse_args(argv)
    rates = [float(r) for r in options.rates.split(",") if r]
    if options.database.startswith("sqlite:///"):
        # The data set into the page cache first, so the first runs do not read the disk.
        with open(options.database.removeprefix("sqlite:///"), "rb") as f:
            while f.read(16 * 1024 * 1024):
                pass
    work = tempfile.mkdtemp(prefix="meteord-latency-bench-")
    results = []
    node = http_bench.Node(options.database, options.files, work, "latency")
    try:
        time.sleep(2)
        if options.idle_flood:
            print(f"the flood alone, no HTTP, {options.idle_flood:g} s each:\n")
            print("| junk sent | kernel drops | node CPU | flooder CPU |")
            print("|---:|---:|---:|---:|")
            for _ in range(3):
                print(idle_flood(options, node, options.idle_flood), flush=True)
            print()
        if rates:
            print(f"event by id, open loop, {options.connections} persistent connections, "
                  f"{options.seconds:g} s per run; node idle RSS {node.rss():.1f} MiB\n")
            print("| rate/s | run | flood | answered/s | p50 ms | p90 ms | p99 ms | p99.9 ms | "
                  "max ms | service p50 / p99 ms | client lag p50 / p99 ms | node CPU | "
                  "flooder CPU | client CPU | errors |")
            print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|")
        seed = 1000
        for rate in rates:
            measure(options, node, rate, options.warm_up, seed, flood=False)
            seed += 1
            for repeat in range(options.repeats):
                order = (False, True) if repeat % 2 == 0 else (True, False)
                for flood in order:
                    figures = measure(options, node, rate, options.seconds, seed, flood)
                    seed += 1
                    results.append(figures)
                    print(row(figures, repeat + 1), flush=True)
                    if figures["errors"] or figures["unanswered"]:
                        print(f"  !! {figures['errors']} errors {figures['error_samples']}, "
                              f"{figures['unanswered']} unanswered", flush=True)
        if results:
            print("\nmedian of the runs, and flood / no flood:\n")
            print("\n".join(summary(results, rates, options.flood_rate)))
    finally:
        node.stop()
        import shutil
        shutil.rmtree(work, ignore_errors=True)
        if options.json:
            with open(options.json, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
