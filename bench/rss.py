"""
Idle memory of a whole node: starts ``twistd -n meteord`` (every component on, an empty SQLite
store in a temporary directory), waits until ``/api/healthz`` answers, lets it settle, and
prints its resident set size from /proc together with the modules that cost most to import.

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


def import_costs(top: int = 12) -> list[tuple[int, str]]:
    """Cumulative import time per top-level package, from ``python -X importtime``."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import meteord.tap, meteord.service, meteord.store.sql, meteord.protocols.discovery"],
        capture_output=True, text=True, check=True)
    costs: dict[str, int] = {}
    for line in result.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if name.startswith(" "):
            continue
        costs[name.split(".")[0]] = costs.get(name.split(".")[0], 0) + int(parts[0].split(":")[1])
    return sorted(((v, k) for k, v in costs.items()), reverse=True)[:top]


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
    print("largest imports (self time, microseconds, by top-level package):")
    for micros, name in import_costs():
        print(f"  {name:24s} {micros:>8d}")


if __name__ == "__main__":
    main()
