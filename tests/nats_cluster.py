"""A NATS cluster for the tests and benchmarks: three nats-server processes on free
loopback ports, routed to each other, with JetStream."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
PATIENCE = 20.0  # seconds; an upper bound on waiting, never a pause


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now (bound to port 0, then let go): NATS routes must be
    named before the servers start."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def keep_log(proc: subprocess.Popen, path: Path, elected: threading.Event) -> None:
    """Writes a server's lines to `path` as they come, and sets `elected` at the line that
    says JetStream has a leader."""
    with open(path, "w") as log:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if "metadata leader" in line:
                elected.set()


class NatsCluster:
    """Three nats-server processes, routed to each other, with JetStream; ready once they
    have elected a JetStream leader."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        ports = free_ports(2 * size)
        self.client_ports, route_ports = ports[:size], ports[size:]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
        self.procs = []
        self.logs = [directory / f"nats{i}.log" for i in range(size)]
        elected = threading.Event()
        for i in range(size):
            proc = subprocess.Popen(
                [NATS, "-a", "127.0.0.1", "-p", str(self.client_ports[i]), "-n", f"n{i}", "-js",
                 "-sd", str(directory / f"n{i}"), "--cluster_name", "mt-test",
                 "--cluster", f"nats://127.0.0.1:{route_ports[i]}", "--routes", routes],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            self.procs.append(proc)
            threading.Thread(target=keep_log, args=(proc, self.logs[i], elected), daemon=True).start()
        # JetStream is ready once the servers have elected a metadata leader.
        if not elected.wait(PATIENCE):
            self.stop()
            raise RuntimeError("the NATS cluster elected no JetStream leader")

    def url(self, i: int) -> str:
        return f"nats://127.0.0.1:{self.client_ports[i]}"

    def kill(self, i: int) -> None:
        self.procs[i].kill()
        self.procs[i].wait(timeout=PATIENCE)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=PATIENCE)
