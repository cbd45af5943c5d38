#!/usr/bin/env python3
"""The same scatter-gather from one Python asyncio task, through NATS with nats-py and
through matchtracker with `matchtracker.aio`, side by side.

    python3 benches/compare_py.py [--duration 5] [--responders 10]

- NATS: nats-server (Debian's, started here on a free port), K responders written in Rust
  with async-nats (`benches/compare --responders K`, one connection each), and one asyncio
  task with nats-py that publishes a request with a reply inbox and gathers all K replies
  (or gives up at 2 s) before it sends the next.
- matchtracker: a tracker in early mode and K servers in a process of their own (the Rust
  nodes, through the blocking API), and one asyncio task with `matchtracker.aio.Client`
  asking again as soon as each answer is complete (every server replies in early mode).

Needs nats-py (`pip install nats-py`) and nats-server (installed with apt if missing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GATHER_TIMEOUT = 2.0

OUR_SIDE = """
import sys, threading, matchtracker
k = int(sys.argv[1])
with matchtracker.Tracker(timeout=2.0, early=True) as tracker:
    servers = [matchtracker.Server(f"S{i + 1}", tracker.address, number=i % 10 + 1) for i in range(k)]
    tracker.wait_for_nodes(k)
    print(tracker.address, flush=True)
    sys.stdin.read()  # until the parent closes it
    for server in servers:
        server.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[round((len(values) - 1) * q)] if values else 0.0


async def closed_loop(ask, duration: float) -> tuple[int, float, list[float]]:
    """Calls `ask(seq)` again as soon as each call ends, for `duration` seconds; returns the
    count, the time taken, and each call's latency."""
    latencies = []
    seq = 0
    started = time.perf_counter()
    until = started + duration
    while time.perf_counter() < until:
        seq += 1
        sent = time.perf_counter()
        await ask(seq)
        latencies.append(time.perf_counter() - sent)
    return len(latencies), time.perf_counter() - started, latencies


async def nats_loop(url: str, k: int, duration: float) -> tuple[int, float, list[float]]:
    import nats

    nc = await nats.connect(url)
    inbox = nc.new_inbox()
    replies: asyncio.Queue = asyncio.Queue()

    async def on_reply(msg) -> None:
        replies.put_nowait(msg.data)

    await nc.subscribe(inbox, cb=on_reply)
    await nc.flush()

    async def ask(seq: int) -> None:
        await nc.publish("match.query", f"{seq} {seq % 10 + 1}".encode(), reply=inbox)
        prefix = f"{seq} ".encode()
        gathered = 0
        while gathered < k:
            data = await asyncio.wait_for(replies.get(), GATHER_TIMEOUT)
            if data.startswith(prefix):
                gathered += 1

    result = await closed_loop(ask, duration)
    await nc.close()
    return result


async def our_loop(address: str, duration: float) -> tuple[int, float, list[float]]:
    from matchtracker import aio

    async with aio.Client.connect("C1", address) as client:
        return await closed_loop(lambda seq: client.find_match(seq % 10 + 1), duration)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--responders", type=int, default=10)
    args = parser.parse_args()
    try:
        import nats  # noqa: F401
    except ImportError:
        sys.exit("compare_py.py: needs nats-py: pip install nats-py")
    if shutil.which("nats-server") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nats-server"], check=True)
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", str(HERE / "compare" / "Cargo.toml")], check=True
    )
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    nats_server = subprocess.Popen(["nats-server", "--addr", "127.0.0.1", "--port", str(port)], stderr=subprocess.DEVNULL)
    responders = ours = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("compare_py.py: nats-server did not start")
                time.sleep(0.05)
        responders = subprocess.Popen(
            [str(HERE / "compare" / "target" / "release" / "matchtracker-compare"), "--nats", url,
             "--responders", str(args.responders)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert responders.stdout.readline().startswith("ready")
        nats_count, nats_elapsed, nats_lat = asyncio.run(nats_loop(url, args.responders, args.duration))
        responders.kill()
        ours = subprocess.Popen(
            [sys.executable, "-c", OUR_SIDE, str(args.responders)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        address = ours.stdout.readline().strip()
        our_count, our_elapsed, our_lat = asyncio.run(our_loop(address, args.duration))
    finally:
        for process in (responders, ours):
            if process is not None and process.poll() is None:
                if process is ours:
                    process.stdin.close()
                    process.wait(timeout=30)
                else:
                    process.kill()
        nats_server.kill()
        nats_server.wait()
    nats_rate, our_rate = nats_count / nats_elapsed, our_count / our_elapsed
    print(f"{'K':>3} {'nats-py req/s':>14} {'aio req/s':>10} {'ratio':>6} {'nats-py p50':>12} {'aio p50':>9} "
          f"{'nats-py p99':>12} {'aio p99':>9}")
    ms = lambda s: f"{s * 1e3:.3f} ms"  # noqa: E731
    print(f"{args.responders:>3} {nats_rate:>14.0f} {our_rate:>10.0f} {our_rate / nats_rate:>5.2f}x "
          f"{ms(quantile(nats_lat, 0.5)):>12} {ms(quantile(our_lat, 0.5)):>9} "
          f"{ms(quantile(nats_lat, 0.99)):>12} {ms(quantile(our_lat, 0.99)):>9}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
