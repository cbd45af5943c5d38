"""What TLS costs: the closed loop over TLS against plain TCP, side by side in one run, and
handshakes per second when thousands of nodes connect at once.

    python3 -m pip install '.[test]'      # matchtracker, and trustme for the certificates
    python3 benches/tls.py [--duration 5] [--repeat 3] [--storm 2000]

The closed loop (K = 10 servers, C = 10 clients, early) alternates plain and TLS runs, so
that both see the same machine; each line is one pair. The storm starts a tracker (plain,
then TLS) and opens `--storm` asyncio servers at once, each connecting, shaking hands and
registering; it reports nodes registered per second.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import trustme

import matchtracker as mt
import matchtracker.aio


def certificates(directory: Path) -> dict[str, str]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    files = {"tls_ca": ca.cert_pem, "tls_cert": leaf.cert_chain_pems[0], "tls_key": leaf.private_key_pem}
    for name, blob in files.items():
        blob.write_to_path(str(directory / name))
    return {name: str(directory / name) for name in files}


async def storm(nodes: int, files: dict[str, str] | None) -> float:
    """Seconds for `nodes` servers to connect and register at once."""
    tracker_tls = {"tls_cert": files["tls_cert"], "tls_key": files["tls_key"]} if files else {}
    node_tls = {"tls_ca": files["tls_ca"]} if files else {}
    async with mt.aio.Tracker.start(**tracker_tls) as tracker:
        started = time.perf_counter()
        servers = await asyncio.gather(
            *(mt.aio.Server.start(f"S{i}", f"localhost:{tracker.port}", 1, **node_tls) for i in range(nodes))
        )
        elapsed = time.perf_counter() - started
        assert tracker.stats()["servers"] == nodes
        await asyncio.gather(*(server.close() for server in servers))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per closed-loop run (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of closed-loop runs (default 3)")
    parser.add_argument("--storm", type=int, default=2000, help="nodes connecting at once (default 2000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        files = certificates(Path(directory))
        print("closed loop, K = 10, C = 10, early:")
        print(f"{'plain req/s':>12} {'TLS req/s':>12} {'TLS/plain':>10} {'plain p50':>10} {'TLS p50':>10}")
        ratios = []
        for _ in range(args.repeat):
            plain = mt.run_load(10, 10, args.duration, early=True)
            tls = mt.run_load(10, 10, args.duration, early=True, **files)
            ratios.append(tls["rate"] / plain["rate"])
            print(
                f"{plain['rate']:12.0f} {tls['rate']:12.0f} {ratios[-1]:10.2f} "
                f"{plain['p50'] * 1e6:8.0f}µs {tls['p50'] * 1e6:8.0f}µs"
            )
        print(f"median TLS/plain: {statistics.median(ratios):.2f}")
        print(f"\n{args.storm} nodes connecting at once:")
        for label, tls_files in [("plain", None), ("TLS", files)]:
            elapsed = asyncio.run(storm(args.storm, tls_files))
            print(f"{label:>6}: {elapsed:.2f} s, {args.storm / elapsed:,.0f} registered per second")


if __name__ == "__main__":
    main()
