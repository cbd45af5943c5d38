#!/usr/bin/env python3
"""What watching a tracker costs (BENCHMARKS.md, "Watching a tracker").

1. The closed loop (K = 10 servers, C = 10 clients, early) against a command-line tracker
   with its monitoring port on and scraped every second, and against one without it,
   alternating in one run: requests per second, the user's own `bench --tracker` command.
2. The cost of one scrape of /metrics and of /connections with 4,000 nodes registered:
   time (median and worst of 20) and size.

Run from the repository after `python3 -m pip install .`:

    benches/monitor.py [--pairs 3] [--duration 5] [--nodes 4000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import matchtracker as mt

PROJECT = Path(__file__).resolve().parent.parent / "project.py"


def start_tracker(*extra: str) -> tuple[subprocess.Popen, str, str | None]:
    """A command-line tracker; its node address and its monitor's, as its lines say."""
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT), "tracker", "--early", *extra], stdout=subprocess.PIPE, text=True
    )
    address = monitor = None
    for line in proc.stdout:
        if m := re.match(r"Central: listening on (\S+)\.$", line):
            address = m[1]
            if "--monitor" not in extra:
                break
        elif m := re.match(r"Central: monitoring on http://(\S+) ", line):
            monitor = m[1]
            break
    # Its further lines are not needed; keep the pipe drained so it never blocks.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, address, monitor


def get(address: str, path: str) -> bytes:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return body


def closed_loop(address: str, duration: float) -> float:
    done = subprocess.run(
        [sys.executable, str(PROJECT), "bench", "--servers", "10", "--clients", "10", "--duration", str(duration),
         "--early", "--tracker", address, "--json"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout)["requests_per_second"]


def rates(pairs: int, duration: float) -> None:
    off, on = [], []
    for _ in range(pairs):
        for monitored in (False, True):
            proc, address, monitor = start_tracker(*(("--monitor", "127.0.0.1:0") if monitored else ()))
            stop = threading.Event()
            scrapes = []
            if monitored:
                def scrape() -> None:
                    while not stop.wait(1.0):
                        scrapes.append(len(get(monitor, "/metrics")))
                threading.Thread(target=scrape, daemon=True).start()
            try:
                rate = closed_loop(address, duration)
            finally:
                stop.set()
                proc.terminate()
                proc.wait()
            (on if monitored else off).append(rate)
            print(f"{'on ' if monitored else 'off'}: {rate:10,.0f} req/s" + (f" ({len(scrapes)} scrapes)" if monitored else ""), flush=True)
    print(f"median off {statistics.median(off):,.0f}, on {statistics.median(on):,.0f}, "
          f"ratio {statistics.median(on) / statistics.median(off):.3f}; pairs: "
          + ", ".join(f"{b / a:.3f}" for a, b in zip(off, on)))


def scrape_cost(nodes: int) -> None:
    proc, address, monitor = start_tracker("--monitor", "127.0.0.1:0")
    half = nodes // 2
    try:
        servers = [mt.Server(f"S{i}", address, number=i % 10 + 1) for i in range(1, half + 1)]
        clients = [mt.Client(f"C{i}", address) for i in range(1, half + 1)]
        measure(monitor, nodes)
        for node in servers + clients:
            node.close()
    finally:
        proc.terminate()
        proc.wait()


def measure(monitor: str, nodes: int) -> None:
    for path in ("/metrics", "/connections"):
        times, size = [], 0
        for _ in range(20):
            started = time.perf_counter()
            size = len(get(monitor, path))
            times.append(time.perf_counter() - started)
        print(f"{path} with {nodes} nodes: median {statistics.median(times) * 1000:.2f} ms, "
              f"worst {max(times) * 1000:.2f} ms, {size:,} bytes", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--nodes", type=int, default=4000)
    args = parser.parse_args()
    rates(args.pairs, args.duration)
    scrape_cost(args.nodes)


if __name__ == "__main__":
    main()
