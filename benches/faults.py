"""Faults for a cluster of trackers, checked from the history (docs/CLUSTER.md, "Faults").

    python3 -m pip install .       # and, from Debian: nats-server iproute2 nftables
    sudo python3 benches/faults.py run --seconds 600 --seed 7
    sudo python3 benches/faults.py run --seconds 120 --latency-only

Three hosts, each a network namespace on one bridge, each with a nats-server (JetStream,
routed to the other two) and a tracker. The servers and clients are this process, on the
bridge's own address, each given every tracker. Every NATS route and every link from a
tracker to a NATS server passes through a small TCP proxy of this file's (`proxy`, run inside
the host of that NATS server), which delays what it forwards, both ways, while latency is on:
this machine's kernel has no netem.

Faults, drawn from the seed (printed): a host cut off from the other two, a "bridge"
partition (two hosts cannot reach each other, both reach the third), a tracker or a nats-server
paused (SIGSTOP for 1 to 5 s), killed (SIGKILL) and started again, and latency between the
hosts. Meanwhile server names are contended by two instances each, holding different
numbers, that register, stay a while, leave and try again; clients ask all the time.

Every registration and every request is recorded on this process's monotonic clock, and
`check` reports wrong answers, double names, lost requests and availability per fault kind.
Needs root (namespaces, nftables).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

SBIN = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
NATS = shutil.which("nats-server", path=SBIN) or "/usr/sbin/nats-server"
IP = shutil.which("ip", path=SBIN) or "ip"
NFT = shutil.which("nft", path=SBIN) or "nft"
HOSTS = 3
SUBNET = "10.231.9"
BRIDGE = "mtf0"
# Each host is a network namespace of its own: nothing else can hold its ports, so they can be
# named (routes must be known before the servers start, and a tracker started again after a
# crash must be found where it was).
TRACKER_PORT, NATS_PORT, NATS_VIA_PROXY, ROUTE_PORT, ROUTE_VIA_PROXY = 7000, 4222, 4223, 6222, 6223
PATIENCE = 30.0  # seconds: an upper bound on waiting for a process to be ready, never a pause
# How long past its deadline a client waits for an answer or an error before it counts the
# request as lost: longer than the longest pause (5 s), since a paused tracker answers nothing
# until it wakes, and then must answer or refuse what waited.
MARGIN = 6.0


def host_ip(i: int) -> str:
    return f"{SUBNET}.{i + 1}"


def namespace(i: int) -> str:
    return f"mtf-h{i + 1}"


def sh(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done


def can_run() -> str | None:
    """Why the harness cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool, path=SBIN) is None:
            return f"needs `{tool}` (Debian: {package})"
    if not os.path.exists(NATS):
        return "needs nats-server (Debian: nats-server)"
    return None


# ---------------------------------------------------------------------------------------
# The network: namespaces on a bridge, partitions as nftables rules inside each host.


class Network:
    def __init__(self) -> None:
        self.teardown()
        sh(IP, "link", "add", BRIDGE, "type", "bridge")
        sh(IP, "addr", "add", f"{SUBNET}.254/24", "dev", BRIDGE)
        sh(IP, "link", "set", BRIDGE, "up")
        for i in range(HOSTS):
            ns, outside = namespace(i), f"mtf-v{i + 1}"
            sh(IP, "netns", "add", ns)
            sh(IP, "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh(IP, "link", "set", outside, "master", BRIDGE)
            sh(IP, "link", "set", outside, "up")
            sh(IP, "-n", ns, "addr", "add", f"{host_ip(i)}/24", "dev", "eth0")
            sh(IP, "-n", ns, "link", "set", "eth0", "up")
            sh(IP, "-n", ns, "link", "set", "lo", "up")
            rules = (
                "table inet mtf {\n"
                " chain input { type filter hook input priority 0; policy accept; }\n"
                " chain output { type filter hook output priority 0; policy accept; }\n"
                "}\n"
            )
            subprocess.run([IP, "netns", "exec", ns, NFT, "-f", "-"], input=rules, text=True, check=True)

    def cut(self, pairs: list[tuple[int, int]]) -> None:
        """Drops every packet between the hosts of each pair, both ways."""
        for a, b in pairs:
            for me, other in ((a, b), (b, a)):
                ns = namespace(me)
                sh(IP, "netns", "exec", ns, NFT, "add", "rule", "inet", "mtf", "input",
                   "ip", "saddr", host_ip(other), "drop")
                sh(IP, "netns", "exec", ns, NFT, "add", "rule", "inet", "mtf", "output",
                   "ip", "daddr", host_ip(other), "drop")

    def heal(self) -> None:
        for i in range(HOSTS):
            for chain in ("input", "output"):
                sh(IP, "netns", "exec", namespace(i), NFT, "flush", "chain", "inet", "mtf", chain)

    @staticmethod
    def teardown() -> None:
        for i in range(HOSTS):
            sh(IP, "netns", "del", namespace(i), check=False)
        sh(IP, "link", "del", BRIDGE, check=False)


# ---------------------------------------------------------------------------------------
# The delaying proxy, run inside a host: `faults.py proxy LISTEN=TARGET ...`.


def proxy_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="faults.py proxy")
    parser.add_argument("links", nargs="+", help="HOST:PORT=HOST:PORT, listen=target")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--jitter-ms", type=float, default=10.0)
    args = parser.parse_args(argv)
    delaying = {"on": False}
    rng = random.Random()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each chunk leaves no earlier than its own delay after it came, and never before the
        # chunk ahead of it: the byte stream keeps its order.
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(65536):
                delay = 0.0
                if delaying["on"]:
                    delay = max(0.0, rng.gauss(args.delay_ms, args.jitter_ms / 2)) / 1000
                queue.put_nowait((time.monotonic() + delay, data))
        except OSError:
            pass
        queue.put_nowait((0.0, None))
        try:
            await sender
        except OSError:
            pass

    async def serve(listen: str, target: str) -> None:
        lhost, lport = listen.rsplit(":", 1)
        thost, tport = target.rsplit(":", 1)

        async def accepted(reader, writer) -> None:
            try:
                treader, twriter = await asyncio.open_connection(thost, int(tport))
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, twriter), pipe(treader, writer))

        server = await asyncio.start_server(accepted, lhost, int(lport), reuse_address=True)
        await server.serve_forever()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: delaying.update(on=True))
        loop.add_signal_handler(signal.SIGUSR2, lambda: delaying.update(on=False))
        servers = [serve(*link.split("=", 1)) for link in args.links]
        print("proxying", flush=True)
        await asyncio.gather(*servers)

    asyncio.run(main())


# ---------------------------------------------------------------------------------------
# The processes of one host.


class Process:
    """A process inside a host namespace, its output kept in a log; `wait_for(text)` waits
    until a line containing `text` has come (the event itself, never a pause)."""

    def __init__(self, ns: str, command: list[str], log: Path) -> None:
        self.command, self.ns, self.log = command, ns, log
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.start()

    def start(self) -> None:
        # `ip netns exec` execs the command: the pid is the command's own.
        self.proc = subprocess.Popen(
            [IP, "netns", "exec", self.ns, *self.command],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.seen = 0
        with self.changed:
            self.mark = len(self.lines)
        threading.Thread(target=self._keep, args=(self.proc,), daemon=True).start()

    def _keep(self, proc: subprocess.Popen) -> None:
        with open(self.log, "a") as log:
            for line in proc.stdout:
                log.write(line)
                with self.changed:
                    self.lines.append(line)
                    self.changed.notify_all()

    def wait_for(self, text: str, count: int = 1) -> None:
        """Waits for `count` lines with `text` since the process was last started."""
        deadline = time.monotonic() + PATIENCE
        with self.changed:
            while sum(text in line for line in self.lines[self.mark:]) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.command[0]} in {self.ns} did not say {text!r}; see {self.log}")
                self.changed.wait(min(left, 0.5))

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=PATIENCE)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


class Host:
    """One host: a delaying proxy, a nats-server and a tracker of the cluster; or, `lone`,
    a tracker of its own and nothing else."""

    def __init__(self, i: int, directory: Path, deadline: float, early: bool, lone: bool = False) -> None:
        self.i, self.ns = i, namespace(i)
        self.directory = directory
        self.proxy = self.nats = self.tracker = None
        ip = host_ip(i)
        joining: list[str] = []
        if not lone:
            routes = ",".join(f"nats://{host_ip(j)}:{ROUTE_VIA_PROXY}" for j in range(HOSTS))
            self.proxy = Process(self.ns, [
                sys.executable, __file__, "proxy",
                f"{ip}:{ROUTE_VIA_PROXY}=127.0.0.1:{ROUTE_PORT}",
                f"{ip}:{NATS_VIA_PROXY}=127.0.0.1:{NATS_PORT}",
            ], directory / f"proxy{i + 1}.log")
            self.proxy.wait_for("proxying")
            self.nats = Process(self.ns, [
                NATS, "-a", "0.0.0.0", "-p", str(NATS_PORT), "-n", f"n{i + 1}", "-js",
                "-sd", str(directory / f"n{i + 1}"), "--cluster_name", "mtf",
                "--cluster", f"nats://127.0.0.1:{ROUTE_PORT}",
                "--cluster_advertise", f"{ip}:{ROUTE_VIA_PROXY}", "--routes", routes,
                "--no_advertise",
            ], directory / f"nats{i + 1}.log")
            # Every NATS server, its own first, each through its host's proxy: whichever the
            # tracker is connected to (it moves when one dies), the link is delayed.
            urls = [f"nats://{host_ip(j)}:{NATS_VIA_PROXY}" for j in [i] + [j for j in range(HOSTS) if j != i]]
            joining = ["--cluster", ",".join(urls), "--cluster-name", "faults"]
        self.tracker_command = [
            sys.executable, "-m", "matchtracker", "tracker", "--listen", f"{ip}:{TRACKER_PORT}",
            "--insecure-no-token", "--insecure-plaintext", "--timeout", str(deadline), "--keepalive", "1",
            *joining, *(["--early"] if early else []),
        ]

    def start_tracker(self) -> None:
        if self.tracker is None:
            self.tracker = Process(self.ns, self.tracker_command, self.directory / f"tracker{self.i + 1}.log")
        else:
            self.tracker.start()
        self.tracker.wait_for("Central: listening on")

    def address(self) -> tuple[str, int]:
        return host_ip(self.i), TRACKER_PORT

    def stop(self) -> None:
        for process in (self.tracker, self.nats, self.proxy):
            if process is not None:
                process.stop()


# ---------------------------------------------------------------------------------------
# The history.


@dataclasses.dataclass
class Registration:
    instance: str
    name: str
    number: int | None  # a server's number; None for a client
    tracker: int
    asked: float
    outcome: str = "open"  # granted, refused:<code>, failed
    granted: float | None = None
    ended: float | None = None
    end: str = ""


@dataclasses.dataclass
class Query:
    instance: str
    registration: int  # index in history.registrations
    at: float
    client: str
    number: int
    matched: bool


@dataclasses.dataclass
class Request:
    instance: str
    name: str
    registration: int
    tracker: int
    number: int
    asked: float
    outcome: str = "open"  # answered, error:<code>, closed, timeout
    ended: float | None = None
    end: str = ""
    names: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Fault:
    kind: str
    target: str
    start: float
    heal: float | None = None


@dataclasses.dataclass
class History:
    registrations: list[Registration] = dataclasses.field(default_factory=list)
    queries: list[Query] = dataclasses.field(default_factory=list)
    requests: list[Request] = dataclasses.field(default_factory=list)
    faults: list[Fault] = dataclasses.field(default_factory=list)
    began: float = 0.0
    finished: float = 0.0

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self)))


# ---------------------------------------------------------------------------------------
# The workload: nodes speaking the wire protocol, recording every step.


class Nodes:
    def __init__(self, history: History, trackers: list[tuple[str, int]], deadline: float, rng: random.Random,
                 servers: int, clients: int) -> None:
        self.history, self.trackers, self.deadline, self.rng = history, trackers, deadline, rng
        self.running = True
        self.replies_all = False  # early mode: servers reply MISS too (WELCOME says `all`)
        self.tasks: list[asyncio.Task] = []
        for k in range(1, servers + 1):
            first = rng.randint(1, 3)
            second = rng.choice([n for n in (1, 2, 3) if n != first])
            for suffix, number in (("a", first), ("b", second)):
                self.tasks.append(asyncio.create_task(self.server(f"S{k}", f"S{k}#{suffix}", number)))
        for k in range(1, clients + 1):
            self.tasks.append(asyncio.create_task(self.client(f"C{k}", f"C{k}#a")))
        # One client name is contended too.
        self.tasks.append(asyncio.create_task(self.client("C1", "C1#b")))

    async def greet(self, verb: str, name: str, instance: str, number: int | None):
        """Registers once at a tracker drawn at random; the registration's index and the
        connection, or None."""
        tracker = self.rng.randrange(len(self.trackers))
        reg = Registration(instance, name, number, tracker, time.monotonic())
        self.history.registrations.append(reg)
        index = len(self.history.registrations) - 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.trackers[tracker]), 1.0)
        except (OSError, asyncio.TimeoutError):
            reg.outcome, reg.ended = "failed", time.monotonic()
            return None
        writer.write(f"{verb} {name}\n".encode())
        try:
            line = (await asyncio.wait_for(reader.readline(), 3.0)).decode().split()
        except (OSError, asyncio.TimeoutError):
            line = []
        now = time.monotonic()
        if line[:1] == ["WELCOME"]:
            reg.outcome, reg.granted = "granted", now
            self.replies_all = line[3:4] == ["all"]
            return index, reader, writer
        reg.outcome = f"refused:{line[1]}" if line[:1] == ["ERROR"] else "failed"
        reg.ended = now
        writer.close()
        return None

    @staticmethod
    def ended(reg: Registration, how: str) -> None:
        if reg.ended is None:
            reg.ended, reg.end = time.monotonic(), how

    async def live(self, verb: str, name: str, instance: str, number: int | None, stay: tuple[float, float],
                   session) -> None:
        """A node's life: greets a tracker drawn at random until welcomed, runs `session` for a
        while, leaves (`BYE`) unless the tracker ended it first, and starts again."""
        while self.running:
            greeted = await self.greet(verb, name, instance, number)
            if greeted is None:
                await asyncio.sleep(self.rng.uniform(0.1, 0.4))
                continue
            index, reader, writer = greeted
            reg = self.history.registrations[index]
            try:
                await session(index, reg, reader, writer, time.monotonic() + self.rng.uniform(*stay))
                if reg.ended is None:
                    writer.write(b"BYE\n")
                    self.ended(reg, "left")
            except OSError:
                self.ended(reg, "closed")
            writer.close()
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))

    async def server(self, name: str, instance: str, number: int) -> None:
        async def session(index: int, reg: Registration, reader, writer, stay: float) -> None:
            """Replies to queries (MATCH when its number matches) until `stay`."""
            while self.running and (left := stay - time.monotonic()) > 0:
                try:
                    raw = await asyncio.wait_for(reader.readline(), left)
                except asyncio.TimeoutError:
                    return
                line = raw.decode().split()
                if not raw:
                    return self.ended(reg, "closed")
                if line[:1] == ["QUERY"] and len(line) == 4:
                    matched = int(line[3]) == number
                    self.history.queries.append(
                        Query(instance, index, time.monotonic(), line[2], int(line[3]), matched))
                    if matched or self.replies_all:
                        writer.write(f"{'MATCH' if matched else 'MISS'} {line[1]}\n".encode())
                elif line[:1] in (["ERROR"], ["BYE"]):
                    return self.ended(reg, " ".join(line[:2]).lower())

        await self.live("HELLO", name, instance, number, (3.0, 10.0), session)

    async def client(self, name: str, instance: str) -> None:
        ids = 0

        async def session(index: int, reg: Registration, reader, writer, stay: float) -> None:
            """Asks, one request at a time, until `stay`."""
            nonlocal ids
            while self.running and time.monotonic() < stay and reg.ended is None:
                ids += 1
                request = Request(instance, name, index, reg.tracker, self.rng.randint(1, 3), time.monotonic())
                self.history.requests.append(request)
                writer.write(f"FIND {ids} {request.number}\n".encode())
                await self.await_answer(reader, reg, request, ids)
                await asyncio.sleep(self.rng.uniform(0.0, 0.05))

        await self.live("HI", name, instance, None, (5.0, 15.0), session)

    async def await_answer(self, reader, reg: Registration, request: Request, id_: int) -> None:
        """Waits for the answer well past the deadline: a request the tracker neither answers
        nor refuses by then counts as lost (`timeout`)."""
        until = time.monotonic() + self.deadline + MARGIN
        while True:
            try:
                raw = await asyncio.wait_for(reader.readline(), max(0.0, until - time.monotonic()))
            except asyncio.TimeoutError:
                request.outcome, request.ended = "timeout", time.monotonic()
                self.ended(reg, "timeout")
                return
            except OSError:
                raw = b""
            now = time.monotonic()
            line = raw.decode().split()
            if not raw:
                request.outcome, request.ended = "closed", now
                self.ended(reg, "closed")
                return
            if line[:2] == ["ANSWER", str(id_)]:
                request.outcome, request.ended, request.end, request.names = "answered", now, line[2], line[3:]
                return
            if line[:1] in (["ERROR"], ["BYE"]):
                request.outcome, request.ended = f"error:{line[1] if line[0] == 'ERROR' else 'bye'}", now
                self.ended(reg, " ".join(line[:2]).lower())
                return

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks, return_exceptions=True)


# ---------------------------------------------------------------------------------------
# Faults.

KINDS = ["isolate", "bridge", "pause-tracker", "pause-nats", "crash-tracker", "crash-nats", "latency"]


FIXED = {"isolate": 4, "bridge": 4, "pause-tracker": 3, "pause-nats": 3, "crash-tracker": 2,
         "crash-nats": 2, "latency": 5}


def schedule(rng: random.Random, seconds: float, fixed: bool) -> list[tuple[float, str, int, float]]:
    """(start, kind, host, how long) from second 5 on, each followed by a quiet spell. A
    fixed schedule is every kind once, in order, for a set time (a pause outlasts the 2 s
    lease), 4 s apart: it fits in 60 s."""
    plan, at = [], 5.0
    kinds = iter(KINDS) if fixed else iter(lambda: rng.choice(KINDS), None)
    for kind in kinds:
        length = FIXED[kind] if fixed else {
            "isolate": rng.uniform(3, 8), "bridge": rng.uniform(3, 8), "latency": rng.uniform(5, 10),
            "pause-tracker": rng.uniform(1, 5), "pause-nats": rng.uniform(1, 5),
            "crash-tracker": rng.uniform(1, 3), "crash-nats": rng.uniform(1, 3),
        }[kind]
        if at + length > seconds - 2:
            break
        plan.append((at, kind, rng.randrange(HOSTS), length))
        at += length + (4.0 if fixed else rng.uniform(4, 8))
    return plan


class Cluster:
    """Three hosts of a cluster, ready once every tracker has heard the others; or, `lone`,
    one host with a tracker of its own, to compare against."""

    def __init__(self, directory: Path, deadline: float, early: bool, lone: bool = False) -> None:
        self.network = Network()
        self.hosts: list[Host] = []
        try:
            self.hosts = [Host(i, directory, deadline, early, lone) for i in range(1 if lone else HOSTS)]
            for host in self.hosts:
                if host.nats is not None:
                    host.nats.wait_for("metadata leader")  # JetStream elected, as every server sees it
            for host in self.hosts:
                host.start_tracker()
            for host in self.hosts:
                host.tracker.wait_for("of the cluster is heard from", len(self.hosts) - 1)
        except BaseException:
            self.stop()
            raise

    def addresses(self) -> list[tuple[str, int]]:
        return [host.address() for host in self.hosts]

    def latency(self, on: bool) -> None:
        for host in self.hosts:
            if host.proxy is not None:
                host.proxy.signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()
        self.network.teardown()


async def inflict(cluster: Cluster, history: History, kind: str, host: int, length: float) -> None:
    fault = Fault(kind, f"h{host + 1}", time.monotonic())
    history.faults.append(fault)
    target = cluster.hosts[host]
    if kind == "isolate":
        cluster.network.cut([(host, j) for j in range(HOSTS) if j != host])
        await asyncio.sleep(length)
        cluster.network.heal()
    elif kind == "bridge":
        ends = [j for j in range(HOSTS) if j != host]
        fault.target = f"h{ends[0] + 1}|h{ends[1] + 1}"
        cluster.network.cut([(ends[0], ends[1])])
        await asyncio.sleep(length)
        cluster.network.heal()
    elif kind.startswith("pause"):
        process = target.tracker if kind == "pause-tracker" else target.nats
        process.signal(signal.SIGSTOP)
        await asyncio.sleep(length)
        process.signal(signal.SIGCONT)
    elif kind.startswith("crash"):
        process = target.tracker if kind == "crash-tracker" else target.nats
        await asyncio.to_thread(process.kill)
        await asyncio.sleep(length)
        if kind == "crash-tracker":
            await asyncio.to_thread(target.start_tracker)
        else:
            await asyncio.to_thread(process.start)
    elif kind == "latency":
        fault.target = "all"
        cluster.latency(True)
        await asyncio.sleep(length)
        cluster.latency(False)
    fault.heal = time.monotonic()


def run_history(seconds: float, seed: int, deadline: float, fixed: bool, directory: Path,
                latency_only: bool = False, early: bool = False, lone: bool = False, no_faults: bool = False) -> History:
    """Runs the cluster under faults (or only latency, or a lone tracker without faults) for
    `seconds` and returns the history."""
    return asyncio.run(run(seconds, seed, deadline, fixed, latency_only, early, lone, no_faults, directory))


async def run(seconds: float, seed: int, deadline: float, fixed: bool, latency_only: bool, early: bool,
              lone: bool, no_faults: bool, directory: Path) -> History:
    rng = random.Random(seed)
    cluster = await asyncio.to_thread(Cluster, directory, deadline, early, lone)
    history = History()
    try:
        history.began = time.monotonic()
        if latency_only:
            cluster.latency(True)
            history.faults.append(Fault("latency", "all", history.began))
        nodes = Nodes(history, cluster.addresses(), deadline, rng, servers=6, clients=5)
        if not (latency_only or lone or no_faults):
            for at, kind, host, length in schedule(rng, seconds, fixed):
                await asyncio.sleep(max(0.0, history.began + at - time.monotonic()))
                print(f"{time.monotonic() - history.began:6.1f}s {kind} h{host + 1} for {length:.1f}s", flush=True)
                await inflict(cluster, history, kind, host, length)
        await asyncio.sleep(max(0.0, history.began + seconds - time.monotonic()))
        if latency_only:
            history.faults[0].heal = time.monotonic()
        await nodes.stop()
        history.finished = time.monotonic()
    finally:
        await asyncio.to_thread(cluster.stop)
    return history


# ---------------------------------------------------------------------------------------
# The checker.

# Times are taken where the nodes read a line, so a line the tracker wrote before an event
# may be read just after it: acts closer than this to the event that forbids them are not
# counted as violations.
TOLERANCE = 0.25


def check(history: History) -> dict:
    regs, queries, requests = history.registrations, history.queries, history.requests
    granted_by_name: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for index, reg in enumerate(regs):
        if reg.granted is not None:
            granted_by_name[reg.name].append((reg.granted, index))

    def superseded(index: int) -> float | None:
        """When another instance was granted this registration's name while it still held
        it (from its own side), if it was."""
        reg = regs[index]
        for at, other in granted_by_name[reg.name]:
            if regs[other].instance != reg.instance and reg.granted < at and (reg.ended is None or at < reg.ended):
                return at
        return None

    # Which instance matched each request: the queries a server read for it.
    queries_by_client: dict[str, list[Query]] = defaultdict(list)
    for query in queries:
        queries_by_client[query.client].append(query)

    wrong, doubles, lost = [], [], []
    for query in queries:  # a tracker querying a registration after its name went elsewhere
        at = superseded(query.registration)
        if at is not None and query.at > at + TOLERANCE:
            doubles.append(f"{query.instance} queried {query.at - at:.2f}s after its name went to another")
    for request in requests:
        if request.outcome == "timeout" or (request.outcome == "open"):
            lost.append(f"{request.instance} asked at {request.asked - history.began:.1f}s: {request.outcome}")
        if request.outcome != "answered":
            continue
        at = superseded(request.registration)
        if at is not None and request.ended > at + TOLERANCE:
            doubles.append(f"{request.instance} answered {request.ended - at:.2f}s after its name went to another")
        for name in request.names:
            sources = [q for q in queries_by_client[request.name]
                       if q.matched and q.number == request.number and regs[q.registration].name == name
                       and request.asked - TOLERANCE <= q.at <= request.ended]
            if not sources:
                wrong.append(f"{name} in the answer to {request.instance} for {request.number} at "
                             f"{request.ended - history.began:.1f}s matched no query for it")
                continue
            for q in sources:
                at = superseded(q.registration)
                if at is not None and request.ended > at + TOLERANCE:
                    doubles.append(f"{name} named to {request.instance} {request.ended - at:.2f}s after it went to another")
    # A request cut off without a word by a tracker that was neither killed nor stopped.
    crashes = [(f.start, f.heal, int(f.target[1:]) - 1) for f in history.faults if f.kind == "crash-tracker"]
    for request in requests:
        if request.outcome == "closed" and not any(
            tracker == request.tracker and start - TOLERANCE <= request.ended <= heal + TOLERANCE
            for start, heal, tracker in crashes
        ):
            lost.append(f"{request.instance} cut off without a word at {request.ended - history.began:.1f}s")

    def complete(request: Request) -> bool:
        """Whether the answer names every server that held the number all along."""
        if request.outcome != "answered":
            return False
        expected = {
            reg.name for reg in regs
            if reg.number == request.number and reg.granted is not None and reg.granted < request.asked
            and (reg.ended is None or reg.ended > request.ended)
        }
        return expected <= set(request.names)

    def overlaps(request: Request, start: float, end: float) -> bool:
        return request.asked <= end and (request.ended or history.finished) >= start

    kinds: dict[str, dict] = {}
    for fault in history.faults:
        heal = fault.heal or history.finished
        during = [r for r in requests if overlaps(r, fault.start, heal)]
        row = kinds.setdefault(fault.kind, {"faults": 0, "requests": 0, "complete": 0, "recovery": []})
        row["faults"] += 1
        row["requests"] += len(during)
        row["complete"] += sum(complete(r) for r in during)
        # Recovery: from healing to the first request from which on every request until the
        # next fault is complete.
        nxt = min((f.start for f in history.faults if f.start > fault.start), default=history.finished)
        after = [r for r in requests if r.asked >= heal and r.ended is not None and r.ended < nxt]
        recovered = None
        for k in range(len(after)):
            if all(complete(r) for r in after[k:]):
                recovered = after[k].asked - heal
                break
        row["recovery"].append(recovered)
    quiet = [r for r in requests if not any(overlaps(r, f.start, (f.heal or history.finished) + 3) for f in history.faults)]
    waits = sorted(r.ended - r.asked for r in requests if r.outcome == "answered")

    def percentile(p: float) -> float:
        return waits[min(len(waits) - 1, int(p * len(waits)))] if waits else float("nan")

    return {
        "latency": {"p50": percentile(0.5), "p99": percentile(0.99), "max": waits[-1] if waits else float("nan")},
        "requests": len(requests),
        "answered": sum(r.outcome == "answered" for r in requests),
        "refused": sum(r.outcome.startswith("error") for r in requests),
        "registrations": sum(reg.outcome == "granted" for reg in regs),
        "wrong": wrong,
        "doubles": doubles,
        "lost": lost,
        "kinds": kinds,
        "quiet": {"requests": len(quiet), "complete": sum(complete(r) for r in quiet)},
    }


def table(result: dict) -> str:
    lines = [
        f"requests {result['requests']} (answered {result['answered']}, refused with an error "
        f"{result['refused']}), registrations granted {result['registrations']}",
        f"wrong answers {len(result['wrong'])}, double names {len(result['doubles'])}, "
        f"lost requests {len(result['lost'])}",
        "answered in {p50:.1f} ms (median), {p99:.1f} ms (99th percentile), {max:.1f} ms at most".format(
            **{k: v * 1000 for k, v in result["latency"].items()}),
        "",
        "| fault | survived | requests during | answered completely | recovery after healing (s) |",
        "|---|---|---|---|---|",
    ]
    for kind, row in sorted(result["kinds"].items()):
        share = f"{100 * row['complete'] / row['requests']:.0f}%" if row["requests"] else "-"
        times = [t for t in row["recovery"] if t is not None]
        recovery = f"{max(0.0, max(times)):.1f} max, {max(0.0, sum(times) / len(times)):.1f} mean" if times else "-"
        if len(times) < len(row["recovery"]):
            recovery += f" ({len(row['recovery']) - len(times)} not before the next fault)"
        lines.append(f"| {kind} | {row['faults']} | {row['requests']} | {share} | {recovery} |")
    quiet = result["quiet"]
    if quiet["requests"]:
        lines.append(f"| none (3 s clear of any fault) | - | {quiet['requests']} | "
                     f"{100 * quiet['complete'] / quiet['requests']:.0f}% | - |")
    for what in ("wrong", "doubles", "lost"):
        for line in result[what][:20]:
            lines.append(f"{what}: {line}")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "proxy":
        return proxy_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="run the cluster under faults and check the history")
    go.add_argument("--seconds", type=float, default=600)
    go.add_argument("--seed", type=int, default=None, help="default: drawn, and printed")
    go.add_argument("--deadline", type=float, default=2.0)
    go.add_argument("--early", action="store_true", help="trackers end requests early")
    go.add_argument("--fixed", action="store_true", help="every kind of fault once, in order")
    go.add_argument("--latency-only", action="store_true", help="50 ms ± 10 ms between hosts, no other fault")
    go.add_argument("--lone", action="store_true", help="one tracker of its own, no fault: to compare against")
    go.add_argument("--no-faults", action="store_true", help="the cluster without any fault")
    go.add_argument("--history", type=Path, help="write the history here as JSON")
    args = parser.parse_args()
    why = can_run()
    if why:
        sys.exit(f"faults.py: {why}")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"seed {seed}", flush=True)
    directory = Path(tempfile.mkdtemp(prefix="mt-faults-"))
    history = run_history(args.seconds, seed, args.deadline, args.fixed, directory, args.latency_only, args.early,
                          args.lone, args.no_faults)
    if args.history:
        history.dump(args.history)
    print(table(check(history)))
    print(f"logs in {directory}")


if __name__ == "__main__":
    main()
