#!/usr/bin/env python3
"""A bounded soak: the roles as separate processes under closed-loop load, with servers and
clients killed (SIGKILL) at random and started again, one tracker restart, and a hostile
connection churn beside them. Prints one JSON object; exits 1 if any answer was wrong.

    python3 benches/soak.py [--seconds 30] [--seed 1]

- The tracker: `./project.py tracker --early`, on a fixed port so that it can be restarted
  where its nodes look for it; killed with SIGKILL halfway and started again.
- Servers S1..S8 as processes: S<i> holds ((i - 1) mod 4) + 1, so each number 1..4 has two.
  S1..S4 stay up the whole run; S5..S8 are killed at random and started again.
- Two churned clients as processes (`./project.py client`), killed at random and restarted.
- Three checked clients in this process (`matchtracker.Client`), each asking again as soon
  as it has an answer; every answer is checked:
  - wrong: it lists a server that does not hold the number (must be 0, always);
  - missing: it leaves out a server of S1..S4 that holds the number, for a request made while
    no tracker restart was under way (must be 0: a server that stayed up and registered
    through a request's whole life is always listed when it matches).
- A hostile churn: connections that send garbage, half lines, bad greetings, or nothing.
- The tracker's resident memory and descriptors when it has started (before any node), at
  its restart, and at the end, once every node has stopped and it has seen them go.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import matchtracker

PROJECT = Path(__file__).resolve().parent.parent / "project.py"
STABLE = ["S1", "S2", "S3", "S4"]
CHURNED = ["S5", "S6", "S7", "S8"]
# After the tracker restarts, its nodes are back within their backoff (at most 2 s apart)
# plus the time to connect; answers in this window may miss a server that is on its way.
RESTART_WINDOW = 5.0


def number_of(server: str) -> int:
    return (int(server[1:]) - 1) % 4 + 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Process:
    """A role's process whose output is read and thrown away (so it never blocks)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PROJECT), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.first = self.proc.stdout.readline() if args[0] == "tracker" else ""
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for _ in self.proc.stdout:
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


class Soak:
    def __init__(self, seconds: float, seed: int) -> None:
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.address = f"127.0.0.1:{free_port()}"
        self.lock = threading.Lock()
        self.answered = 0
        self.wrong = 0
        # Answers that leave out a stable server: wrong unless they came around the restart,
        # which is known only at the end. Normally there are none to keep.
        self.short: list[tuple[float, float]] = []
        self.failures = 0
        self.restart: tuple[float, float] | None = None  # (killed, up again)
        self.hostile = 0
        self.done = threading.Event()

    def tracker(self) -> Process:
        # Early mode: a request ends when every server has replied, so the long deadline
        # costs nothing, and a busy machine cannot make a live server's reply miss it.
        tracker = Process("tracker", "--listen", self.address, "--early", "--timeout", "10", "--keepalive", "1")
        assert "listening on" in tracker.first, tracker.first
        return tracker

    def server(self, name: str) -> Process:
        return Process("server", "--tracker", self.address, "--name", name, "--number", str(number_of(name)))

    def ask(self, name: str, seed: int) -> None:
        """A checked client: asks, records, and on any failure connects again."""
        rng = random.Random(seed)
        client = None
        while not self.done.is_set():
            try:
                if client is None:
                    client = matchtracker.Client(name, self.address)
                number = rng.randint(1, 4)
                t0 = time.monotonic()
                servers = client.find_match(number)
                t1 = time.monotonic()
                self.record(t0, t1, number, servers)
            except (matchtracker.MatchTrackerError, ValueError):
                with self.lock:
                    self.failures += 1
                if client is not None:
                    client.close()
                client = None
                self.done.wait(0.05)
        if client is not None:
            client.close()

    def record(self, t0: float, t1: float, number: int, servers: list[str]) -> None:
        wrong = any(s not in STABLE + CHURNED or number_of(s) != number for s in servers)
        short = any(number_of(s) == number and s not in servers for s in STABLE)
        with self.lock:
            self.answered += 1
            self.wrong += wrong
            if short:
                self.short.append((t0, t1))

    def churn_hostile(self) -> None:
        host, port = self.address.rsplit(":", 1)
        junk = [b"", b"\xff\xfe\n", b"HELLO\n", b"FIND 1 5\n", b"HI C1 " + b"x" * 2000, b"HELLO S1", b"BYE\n"]
        while not self.done.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=1) as s:
                    s.sendall(self.rng.choice(junk))
                self.hostile += 1
            except OSError:
                pass
            self.done.wait(0.005)

    def run(self) -> dict:
        tracker = self.tracker()
        figures: dict = {"seconds": self.seconds}
        figures["tracker_start"] = {"rss_mib": rss_mib(tracker.proc.pid), "descriptors": descriptors(tracker.proc.pid)}
        servers = {name: self.server(name) for name in STABLE + CHURNED}
        # The stable servers are registered before the checked clients start: wait on the
        # tracker's count, through a client's first answer listing all of them.
        probe = None
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = probe or matchtracker.Client("P0", self.address)
                if all(s in probe.find_match(n) for n in range(1, 5) for s in STABLE if number_of(s) == n):
                    break
            except matchtracker.MatchTrackerError:
                probe = None
            if time.monotonic() > deadline:
                raise RuntimeError("the stable servers never registered")
            self.done.wait(0.05)
        probe.close()
        churned_clients = {f"X{k}": Process("client", "--tracker", self.address, "--name", f"X{k}", "--rounds", "100000") for k in (1, 2)}
        askers = [threading.Thread(target=self.ask, args=(f"K{k}", k)) for k in (1, 2, 3)]
        hostile = threading.Thread(target=self.churn_hostile)
        for thread in [*askers, hostile]:
            thread.start()
        started = time.monotonic()
        restarted = False
        kills = 0
        while (now := time.monotonic()) - started < self.seconds:
            if not restarted and now - started > self.seconds / 2:
                killed = time.monotonic()
                tracker.kill()
                tracker = self.tracker()
                self.restart = (killed, time.monotonic())
                # Its nodes come back within milliseconds, so this is not a bare baseline.
                figures["second_tracker_at_restart"] = {
                    "rss_mib": rss_mib(tracker.proc.pid),
                    "descriptors": descriptors(tracker.proc.pid),
                }
                restarted = True
            name = self.rng.choice(CHURNED + list(churned_clients))
            if name in servers:
                servers[name].kill()
                self.done.wait(self.rng.uniform(0.05, 0.5))
                servers[name] = self.server(name)
            else:
                churned_clients[name].kill()
                self.done.wait(self.rng.uniform(0.05, 0.5))
                churned_clients[name] = Process("client", "--tracker", self.address, "--name", name, "--rounds", "100000")
            kills += 1
            self.done.wait(self.rng.uniform(0.2, 1.0))
        figures["tracker_before_stopping_nodes"] = {"rss_mib": rss_mib(tracker.proc.pid)}
        self.done.set()
        for thread in [*askers, hostile]:
            thread.join()
        for process in [*servers.values(), *churned_clients.values()]:
            process.kill()
        # Every node is gone; wait for the tracker to see the last of them go.
        # The same program with no node: what the first tracker held before any node came.
        baseline = figures["tracker_start"]["descriptors"]
        until = time.monotonic() + 20
        while descriptors(tracker.proc.pid) > baseline and time.monotonic() < until:
            time.sleep(0.05)
        figures["tracker_end"] = {"rss_mib": rss_mib(tracker.proc.pid), "descriptors": descriptors(tracker.proc.pid)}
        tracker.stop()
        figures.update(self.check())
        figures.update({"kills": kills, "hostile_connections": self.hostile, "failed_requests": self.failures})
        return figures

    def check(self) -> dict:
        killed, up = self.restart or (float("inf"), float("inf"))
        missing = sum(1 for t0, t1 in self.short if not (t1 >= killed - 1.0 and t0 <= up + RESTART_WINDOW))
        return {"answered": self.answered, "wrong": self.wrong, "missing": missing}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    figures = Soak(args.seconds, args.seed).run()
    print(json.dumps(figures, indent=1))
    return 0 if figures["wrong"] == 0 and figures["missing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
