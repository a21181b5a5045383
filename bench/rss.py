"""
Idle memory of a whole node: starts ``twistd -n meteord`` (every component on, an empty SQLite
store in a temporary directory), waits until ``/api/healthz`` answers, lets it settle, and
prints its resident set size from /proc, then how much memory each group of imports adds.

    .venv/bin/python bench/rss.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


IMPORT_STEPS = [
    ("python", ""),
    ("twisted reactor + twisted.web", "import twisted.internet.reactor, twisted.web.server"),
    ("klein + werkzeug", "import klein"),
    ("treq (+ cryptography, pyOpenSSL)", "import treq"),
    ("argon2", "import argon2"),
    ("meteord store + web", "import meteord.service, meteord.store.sql, meteord.web.query,"
                             " meteord.web.admin, meteord.web.importer"),
    ("meteord discovery + exporter", "import meteord.protocols.discovery, meteord.exporter.service"),
    ("psycopg2 + txpostgres (PostgreSQL only)", "import psycopg2, txpostgres.txpostgres"),
]


def import_costs() -> list[tuple[str, float]]:
    """Resident memory added by each group of imports, in one fresh interpreter, in order."""
    script = "\n".join(
        [f"{code}\nprint(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
         for _, code in IMPORT_STEPS])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    readings = [int(line) for line in result.stdout.split()]
    costs, previous = [], 0
    for (name, _), reading in zip(IMPORT_STEPS, readings):
        costs.append((name, (reading - previous) / 1024))
        previous = reading
    return costs


def main() -> None:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "METEORD_DISCOVERY_PORT": str(free_port())}
        process = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "meteord", "--data-dir", data_dir,
             "--http", f"tcp:{port}:interface=127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=data_dir)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/healthz") as r:
                        health = json.load(r)
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise SystemExit("meteord did not answer /api/healthz")
                    time.sleep(0.2)
            time.sleep(3)
            print(f"health: {health}")
            print(f"idle RSS: {rss_kib(process.pid) / 1024:.1f} MiB")
        finally:
            process.terminate()
            process.wait(30)
    print("resident memory added by each group of imports (MiB):")
    for name, mib in import_costs():
        print(f"  {name:42s} {mib:6.1f}")


if __name__ == "__main__":
    main()
