#!/usr/bin/env python3
"""A command-line tracker's memory over a long life: its resident set after the first 10,000
answered requests and after 1,000,000, then after the first 10,000 refused greetings and
after 100,000. A role that runs for weeks must sit flat.

    python3 benches/memory.py [--requests 1000000] [--refused 100000] [--output FILE]

The tracker is `./project.py tracker --early --token T`, its lines going to `--output`
(/dev/null by default; a file or a pipe nobody reads are the other cases worth trying). The
load is `matchtracker.run_load` against it (10 servers, 10 clients, closed loop); the
refused greetings are raw connections saying `HELLO X<i> wrong`, spread over 127.0.0.1-4 so
that no local port is reused while the tracker's side of it lingers in TIME_WAIT.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import matchtracker

PROJECT = Path(__file__).resolve().parent.parent / "project.py"
TOKEN = "memory-bench"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def load_until(address: str, total: int, done: int) -> int:
    while done < total:
        done += matchtracker.run_load(10, 10, 1.0, tracker=address, token=TOKEN)["requests"]
    return done


def refuse_until(host: str, port: int, total: int, done: int) -> int:
    while done < total:
        source = f"127.0.0.{1 + done % 4}"
        with socket.create_connection((host, port), source_address=(source, 0)) as s:
            s.sendall(f"HELLO X{done} wrong\n".encode())
            while s.recv(4096):  # the ERROR line, then the close
                pass
        done += 1
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--refused", type=int, default=100_000)
    parser.add_argument("--output", default="/dev/null", help="where the tracker's lines go")
    args = parser.parse_args()
    with open(args.output, "w") as out:
        tracker = subprocess.Popen(
            [sys.executable, str(PROJECT), "tracker", "--early", "--token", TOKEN, "--json"],
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
        first = json.loads(tracker.stdout.readline())
        address = first["fields"]["address"]
        # From here on the tracker's lines go where --output says: hand the pipe to `cat`.
        cat = subprocess.Popen(["cat"], stdin=tracker.stdout, stdout=out)
        host, port = address.rsplit(":", 1)
        pid = tracker.pid
        figures: dict[str, float] = {"start_mib": rss_mib(pid)}
        started = time.monotonic()
        done = load_until(address, 10_000, 0)
        figures["after_10k_requests_mib"] = rss_mib(pid)
        done = load_until(address, args.requests, done)
        figures["requests"] = done
        figures["after_all_requests_mib"] = rss_mib(pid)
        figures["requests_seconds"] = time.monotonic() - started
        started = time.monotonic()
        refused = refuse_until(host, int(port), 10_000, 0)
        figures["after_10k_refused_mib"] = rss_mib(pid)
        refused = refuse_until(host, int(port), args.refused, refused)
        figures["refused"] = refused
        figures["after_all_refused_mib"] = rss_mib(pid)
        figures["refused_seconds"] = time.monotonic() - started
        figures["descriptors_at_end"] = descriptors(pid)
        tracker.send_signal(signal.SIGINT)
        tracker.wait(timeout=30)
        cat.wait(timeout=30)
    figures["growth_over_requests_mib"] = figures["after_all_requests_mib"] - figures["after_10k_requests_mib"]
    figures["growth_over_refused_mib"] = figures["after_all_refused_mib"] - figures["after_10k_refused_mib"]
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
