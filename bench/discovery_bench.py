"""
How many discovery datagrams one core handles per second.

In process (no sockets): calls DiscoveryProtocol.datagramReceived directly with junk of every
kind and with valid announcements, unsigned and signed, and prints datagrams/s for each. With
--udp it also runs a DiscoveryService on 127.0.0.1 under the real reactor while a child process
floods it with junk, and prints how many datagrams the service read and handled per second, the
CPU it used, and how many the kernel dropped before they were read (with the service's datagram
budget, `--budget`, default that of `[discovery] max_datagrams_per_second`; a budget of
1000000 shows what one core can read). The goal is at least 20,000 junk datagrams/s.

    python bench/discovery_bench.py [--count N] [--udp] [--udp-seconds S] [--budget N]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from typing import Callable

from twisted.internet.task import Clock

import meteord
from meteord.protocols.beacon import Beacon, encode_beacon
from meteord.protocols.discovery import (
    DEFAULT_MAX_DATAGRAMS_PER_SECOND,
    DiscoveryCounters,
    DiscoveryProtocol,
    MemoryNodeRegistryStore,
    NodeIdentity,
)
from meteord.protocols.registry import NodeRegistry

SECRET = b"bench secret"
NOW = 1_700_000_000
REPEATS = 3


def beacon(node_id: str, seq: int) -> Beacon:
    """A valid announcement of C{node_id}."""
    return Beacon(
        kind="announce",
        node_id=node_id,
        name=f"Camera {node_id}",
        roles=("camera", "query"),
        http_port=8080,
        scheme="http",
        version="0.1.0",
        seq=seq,
        boot="5f3a9c1e77d20b64",
        sent_at=NOW * 1000,
        interval=10.0,
    )


def junk_kinds(rng: random.Random) -> dict[str, Callable[[int], bytes]]:
    """Makers of junk datagrams, by the reason they are dropped for."""
    valid = beacon("0123456789ab", 1).to_json()
    return {
        "random bytes (not_utf8/not_json)": lambda i: rng.randbytes(rng.randrange(1, 1200)),
        "oversize 1300 B": lambda i: b"x" * 1300,
        "not_json text": lambda i: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "deep nesting, 1000 levels": lambda i: b"[" * 1000,
        "nesting at the limit, 192 levels": lambda i: b"[" * 192,
        "wrong_proto": lambda i: json.dumps(dict(valid, proto="ssdp")).encode(),
        "wrong_type": lambda i: json.dumps(dict(valid, http_port=str(i))).encode(),
        "unsigned (secret set)": lambda i: encode_beacon(beacon(f"n{i}", i)),
        "bad_signature": lambda i: encode_beacon(beacon(f"n{i}", i), b"guess"),
    }


def make_protocol(secret: bytes | None, max_nodes: int = 1024) -> DiscoveryProtocol:
    """A protocol for a node called C{bench}, with no transport (nothing is sent)."""
    clock = Clock()
    clock.advance(NOW)
    identity = NodeIdentity(
        node_id="bench",
        name="Bench",
        roles=("hub",),
        http_port=8080,
        scheme="http",
        version=meteord.__version__,
        interval=10.0,
    )
    return DiscoveryProtocol(
        identity,
        NodeRegistry(max_nodes=max_nodes),
        MemoryNodeRegistryStore(),
        clock,
        DiscoveryCounters(),
        secret,
    )


def rate(make: Callable[[], DiscoveryProtocol], datagrams: list[bytes]) -> float:
    """
    Datagrams per second through C{datagramReceived} of a fresh protocol from C{make}, best of
    L{REPEATS} runs (the machine may be busy with other work).
    """
    best = 0.0
    source = ("192.0.2.1", 47623)
    for _ in range(REPEATS):
        protocol = make()
        receive = protocol.datagramReceived
        started = time.perf_counter()
        for datagram in datagrams:
            receive(datagram, source)
        best = max(best, len(datagrams) / (time.perf_counter() - started))
    return best


def in_process(count: int) -> None:
    """Print datagrams/s for each kind of junk, a mix of all, and valid announcements."""
    rng = random.Random(47623)
    kinds = junk_kinds(rng)
    print(f"in process, {count} datagrams per line, one core, best of {REPEATS}:")
    mixed: list[bytes] = []
    for label, make in kinds.items():
        datagrams = [make(i) for i in range(count)]
        mixed.extend(datagrams[: count // len(kinds)])
        print(f"  junk  {label:34} {rate(lambda: make_protocol(SECRET), datagrams):>10,.0f} /s")
    rng.shuffle(mixed)
    mixed_rate = rate(lambda: make_protocol(SECRET), mixed)
    print(f"  junk  {'mix of all of the above':34} {mixed_rate:>10,.0f} /s")
    for secret in (None, SECRET):
        nodes = 1000
        datagrams = [encode_beacon(beacon(f"n{i % nodes}", i), secret) for i in range(count)]
        label = f"valid, {nodes} nodes, {'signed' if secret else 'unsigned'}"
        print(f"  valid {label:34} {rate(lambda: make_protocol(secret), datagrams):>10,.0f} /s")


FLOODER = """
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
datagrams = [bytes.fromhex(line) for line in sys.stdin.read().split()]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent, deadline, i = 0, time.monotonic() + seconds, 0
while time.monotonic() < deadline:
    for _ in range(100):
        try:
            s.sendto(datagrams[i % len(datagrams)], ("127.0.0.1", port))
            sent += 1
        except BlockingIOError:
            pass
        i += 1
print(sent)
"""


def over_udp(seconds: float, budget: int) -> None:
    """Flood a real DiscoveryService on 127.0.0.1 with junk from another process."""
    from twisted.internet import reactor

    from meteord.protocols.beacon import REASON_SOCKET_BUFFER_FULL
    from meteord.protocols.discovery import DiscoveryService

    service = DiscoveryService(
        reactor=reactor,
        node_id="bench",
        name="Bench",
        roles=["hub"],
        http_port=8080,
        port=0,
        interface="127.0.0.1",
        broadcast=False,
        secret=SECRET,
        max_datagrams_per_second=budget,
    )
    service.startService()
    port = service.listening_port
    rng = random.Random(1)
    kinds = list(junk_kinds(rng).values())
    lines = [kinds[i % len(kinds)](i).hex() for i in range(800)]
    flooder = subprocess.Popen(
        [sys.executable, "-c", FLOODER, str(port), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    flooder.stdin.write("\n".join(lines))
    flooder.stdin.close()
    started = time.perf_counter()
    cpu_started = time.process_time()

    def finish() -> None:
        if flooder.poll() is None:
            reactor.callLater(0.05, finish)
            return
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        sent = int(flooder.stdout.read())
        counters = service.counters
        kernel = counters.dropped[REASON_SOCKET_BUFFER_FULL]
        handled = sum(counters.dropped.values()) - kernel + counters.accepted
        print(f"over loopback UDP, {seconds:.0f} s flood from another process, budget {budget:,}/s:")
        print(f"  sent by flooder          {sent / elapsed:>10,.0f} /s")
        print(f"  read and handled         {handled / elapsed:>10,.0f} /s")
        print(f"  service CPU busy         {100 * cpu / elapsed:>10.0f} %")
        print(f"  reading paused           {counters.read_pauses:>10,} times")
        print(f"  dropped by the kernel    {kernel:>10,} counted, {sent - handled - kernel:,} not yet")
        print(f"  accepted into registry   {counters.accepted:>10,}")
        service.stopService().addBoth(lambda _: reactor.stop())

    reactor.callLater(0.05, finish)
    reactor.run()


def main() -> None:
    """Run the measurements chosen on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000, help="datagrams per in-process line")
    parser.add_argument("--udp", action="store_true", help="also flood a service over UDP")
    parser.add_argument("--udp-seconds", type=float, default=5.0)
    parser.add_argument("--budget", type=int, default=DEFAULT_MAX_DATAGRAMS_PER_SECOND,
                        help="the service's max_datagrams_per_second")
    options = parser.parse_args()
    in_process(options.count)
    if options.udp:
        over_udp(options.udp_seconds, options.budget)


if __name__ == "__main__":
    main()
