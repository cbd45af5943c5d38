#!/usr/bin/env python3
"""The tracker at its edges: one connection pipelining many requests, honest clients beside
it, and a stop with requests open. Figures for BENCHMARKS.md; run after `pip install .`.

    python3 benches/edges.py [--requests 100000] [--duration 5]

- pipeline: one raw connection writes N `FIND`s in one go (early mode, K = 10 servers) and
  reads every answer; requests per second, beside the closed loop of 10 clients (`run_load`)
  against the same tracker;
- neighbours: the closed loop's p50/p99 alone, then while one connection pipelines without
  pause;
- drain: 1,000 requests open (a server that never replies holds each to its deadline) when
  the tracker is closed; how many were answered, and how long the close took.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

import matchtracker

K = 10


def join(address: str, greeting: str) -> tuple[socket.socket, "socket.SocketIO"]:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(greeting.encode() + b"\n")
    lines = sock.makefile("rb")
    welcome = lines.readline()
    assert welcome.startswith(b"WELCOME"), welcome
    return sock, lines


def burst(first: int, count: int) -> bytes:
    return "".join(f"FIND {i} {i % 10 + 1}\n" for i in range(first, first + count)).encode()


def pipeline(address: str, count: int, name: str = "P1") -> dict:
    """One connection, `count` requests in one write, every answer read and checked once."""
    sock, lines = join(address, f"HI {name}")
    start = time.perf_counter()
    writer = threading.Thread(target=sock.sendall, args=(burst(1, count),))
    writer.start()
    seen = bytearray(count + 1)
    for _ in range(count):
        fields = lines.readline().split()
        assert fields[0] == b"ANSWER", fields
        id_ = int(fields[1])
        assert not seen[id_], f"id {id_} twice"
        seen[id_] = 1
        assert fields[3:] == [f"K{id_ % 10 + 1}".encode()], fields
    elapsed = time.perf_counter() - start
    writer.join()
    sock.close()
    return {"requests": count, "seconds": round(elapsed, 3), "rate": round(count / elapsed)}


def pipeline_forever(address: str, stop: threading.Event, counted: list[int]) -> None:
    """Pipelines batches of 1,000 requests without pause until `stop`."""
    sock, lines = join(address, "HI P9")
    next_id = 1
    while not stop.is_set():
        sock.sendall(burst(next_id, 1000))
        for _ in range(1000):
            lines.readline()
        next_id += 1000
    counted.append(next_id - 1)
    sock.close()


def drain(open_requests: int, deadline: float) -> dict:
    tracker = matchtracker.Tracker(timeout=deadline)
    server = matchtracker.Server("S1", tracker.address, number=4)
    silent, silent_lines = join(tracker.address, "HELLO S2")
    client, client_lines = join(tracker.address, "HI C1")
    client.sendall("".join(f"FIND {i} 4\n" for i in range(1, open_requests + 1)).encode())
    for _ in range(open_requests):  # every request read and asked of the silent server
        assert silent_lines.readline().startswith(b"QUERY")
    start = time.perf_counter()
    tracker.close()
    took = time.perf_counter() - start
    answered = 0
    while (line := client_lines.readline()).startswith(b"ANSWER"):
        answered += 1
    assert line == b"BYE\n", line
    server.close()
    silent.close()
    client.close()
    return {"open": open_requests, "answered": answered, "close_seconds": round(took, 3), "deadline": deadline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    results: dict = {}
    with matchtracker.Tracker(timeout=2.0, early=True) as tracker:
        servers = [matchtracker.Server(f"K{n}", tracker.address, number=n) for n in range(1, K + 1)]
        tracker.wait_for_nodes(K)
        results["pipeline"] = pipeline(tracker.address, args.requests)
        # The closed loop brings its own 10 servers: every request asks 20.
        alone = matchtracker.run_load(K, 10, args.duration, tracker=tracker.address)
        stop, counted = threading.Event(), []
        hammer = threading.Thread(target=pipeline_forever, args=(tracker.address, stop, counted))
        hammer.start()
        beside = matchtracker.run_load(K, 10, args.duration, tracker=tracker.address)
        stop.set()
        hammer.join()
        keep = ("requests", "rate", "p50", "p99")
        results["closed_loop_alone"] = {k: alone[k] for k in keep}
        results["closed_loop_beside_pipeliner"] = {k: beside[k] for k in keep}
        results["pipeliner_meanwhile"] = {"requests": counted[0], "rate": round(counted[0] / args.duration)}
        for server in servers:
            server.close()
    results["drain"] = drain(1000, 1.0)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
