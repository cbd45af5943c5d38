"""Each role as its own OS process over loopback, as across hosts: answers are right, nodes
survive a tracker restart, and the token keeps strangers out."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent / "project.py"
PATIENCE = 20.0  # seconds; an upper bound on waiting for a line, never a pause


class Role:
    """A role's process, with its output lines collected as they come."""

    def __init__(self, *args: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, str(PROJECT), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str) -> re.Match:
        """The first line from now on that matches; fails if the process ends first."""
        while True:
            line = self._queue.get(timeout=PATIENCE)
            assert line is not None, f"ended without {pattern!r}; output:\n" + "\n".join(self.lines)
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m

    def finish(self) -> int:
        code = self.proc.wait(timeout=PATIENCE)
        while (line := self._queue.get(timeout=PATIENCE)) is not None:
            self.lines.append(line)
        return code

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.finish()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=PATIENCE)


@pytest.fixture
def roles():
    started: list[Role] = []

    def start(*args: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> Role:
        role = Role(*args, env=env, prefix=prefix)
        started.append(role)
        return role

    yield start
    for role in started:
        role.kill()


def start_tracker(roles, *args: str, env: dict | None = None) -> tuple[Role, str]:
    tracker = roles("tracker", "--timeout", "0.3", *args, env=env)
    listening = tracker.wait_for(r"^Central: listening on (\S+?)(, over TLS)?\.$")
    # The first line says whether the tracker speaks TLS.
    assert bool(listening[2]) == ("--tls-cert" in args), listening[0]
    return tracker, listening[1]


def start_server(roles, address: str, name: str, *args: str, env: dict | None = None) -> tuple[Role, int]:
    server = roles("server", "--tracker", address, "--name", name, *args, env=env)
    said = server.wait_for(rf"^{name}: (selected random number is|holds the number it was given,) (\d+)\.$")
    # The line says whether the number was drawn or given.
    assert (said[1] == "selected random number is") == ("--number" not in args), said[0]
    number = int(said[2])
    server.wait_for(rf"^{name}: received “Welcome” from Central\.$")
    return server, number


def answers(lines: list[str], client: str) -> list[tuple[int, list[str]]]:
    """(number asked, servers answered) for each request in a client's output."""
    found, asked = [], None
    for line in lines:
        if m := re.match(rf"^{client}: find match of (\d+)$", line):
            asked = int(m[1])
        elif line == f"{client}: No match has been found":
            found.append((asked, []))
        elif m := re.match(rf"^{client}: Match found on servers? (.+)$", line):
            head, _, last = m[1].rpartition(" and ")
            found.append((asked, (head.split(", ") if head else []) + [last]))
    return found


def test_a_tracker_three_servers_and_three_clients_as_processes(roles) -> None:
    tracker, address = start_tracker(roles)
    numbers = {}
    servers = []
    for i in (1, 2, 3):
        server, numbers[f"S{i}"] = start_server(roles, address, f"S{i}")
        servers.append(server)
    clients = [roles("client", "--tracker", address, "--name", f"C{i}", "--rounds", "3", "--seed", str(i)) for i in (1, 2, 3)]
    for i, client in enumerate(clients, start=1):
        assert client.finish() == 0, "\n".join(client.lines)
        got = answers(client.lines, f"C{i}")
        assert len(got) == 3
        for asked, servers_found in got:
            assert servers_found == [s for s in ("S1", "S2", "S3") if numbers[s] == asked]
    assert tracker.stop() == 0
    assert any("stopped" in line for line in tracker.lines)
    for server in servers:
        server.wait_for(r"lost Central \(it said goodbye\)")
        assert server.stop() == 0


def test_nodes_come_back_after_the_tracker_restarts(roles) -> None:
    tracker, address = start_tracker(roles)
    server, number = start_server(roles, address, "S1")
    tracker.kill()
    server.wait_for(r"^S1: lost Central")
    # A new tracker on the same port: the server registers again by itself.
    restarted, again = start_tracker(roles, "--listen", address)
    assert again == address
    server.wait_for(r"^S1: received “Welcome” from Central\.$")
    client = roles("client", "--tracker", address, "--name", "C1", "--rounds", "1", "--number", str(number))
    assert client.finish() == 0
    assert answers(client.lines, "C1") == [(number, ["S1"])]
    restarted.stop()
    server.stop()


def test_a_server_says_whether_it_drew_its_number_or_was_given_it(roles) -> None:
    tracker, address = start_tracker(roles)
    # start_server checks the words against the flags: "selected random number" only if drawn.
    _, drawn = start_server(roles, address, "S1")
    _, given = start_server(roles, address, "S2", "--number", "6")
    assert given == 6 and 1 <= drawn <= 10
    tracker.stop()


def test_a_token_lets_its_holders_in_and_keeps_others_out(roles) -> None:
    secret = {"MATCHTRACKER_TOKEN": "k9-ZX!q"}
    tracker, address = start_tracker(roles, env=secret)
    server, number = start_server(roles, address, "S1", env=secret)
    client = roles("client", "--tracker", address, "--name", "C1", "--rounds", "1", "--number", str(number), env=secret)
    assert client.finish() == 0
    assert answers(client.lines, "C1") == [(number, ["S1"])]
    for token_args in ([], ["--token", "wrong"]):
        stranger = roles("client", "--tracker", address, "--name", "C2", "--rounds", "1", *token_args)
        assert stranger.finish() == 1
        assert len(stranger.lines) >= 1 and "unauthorized" in stranger.lines[-1]
    tracker.stop()
    server.stop()
    for role in (tracker, server, client):
        assert not any("k9-ZX!q" in line for line in role.lines), "the token must never be printed"


def test_listening_beyond_loopback_needs_tls_and_a_token_or_the_insecure_flags(roles) -> None:
    refused = roles("tracker", "--listen", "0.0.0.0:0")
    assert refused.finish() == 2
    assert len(refused.lines) == 1 and "needs TLS" in refused.lines[0] and "a token" in refused.lines[0]
    open_tracker, address = start_tracker(
        roles, "--listen", "0.0.0.0:0", "--insecure-no-token", "--insecure-plaintext"
    )
    assert address.startswith("0.0.0.0:")
    assert open_tracker.stop(signal.SIGINT) == 0


@pytest.mark.parametrize(
    "args, word",
    [
        (["server", "--name", "S1"], "--tracker"),
        (["server", "--tracker", "127.0.0.1:1", "--name", "S 1"], "name must be"),
        (["server", "--tracker", "127.0.0.1:1", "--name", "Central"], "is the tracker's own"),
        (["client", "--tracker", "127.0.0.1:1", "--name", "Central"], "is the tracker's own"),
        (["server", "--tracker", "nowhere", "--name", "S1"], "tracker address must be \"host:port\", such as"),
        (["client", "--tracker", "127.0.0.1:99999", "--name", "C1"], "must be at most 65535 (got 99999"),
        (["client", "--tracker", "127.0.0.1:1", "--name", "C1", "--number", "11"], "number must be"),
        (["tracker", "--listen", "127.0.0.1:0", "--timeout", "0"], "timeout must be"),
    ],
)
def test_role_mistakes_are_one_line_and_exit_2(args: list[str], word: str) -> None:
    result = subprocess.run([sys.executable, str(PROJECT), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and word in result.stderr, result.stderr


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: two hosts with their own addresses."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (`ip netns`) to make two hosts on one machine")
    a, b = f"mt-a-{os.getpid()}", f"mt-b-{os.getpid()}"
    va, vb = f"mta{os.getpid() % 100000}", f"mtb{os.getpid() % 100000}"
    setup = [
        ["ip", "netns", "add", a],
        ["ip", "netns", "add", b],
        ["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
        ["ip", "link", "set", va, "netns", a],
        ["ip", "link", "set", vb, "netns", b],
        ["ip", "-n", a, "addr", "add", "10.231.7.1/24", "dev", va],
        ["ip", "-n", b, "addr", "add", "10.231.7.2/24", "dev", vb],
        ["ip", "-n", a, "link", "set", va, "up"],
        ["ip", "-n", b, "link", "set", vb, "up"],
        ["ip", "-n", a, "link", "set", "lo", "up"],
        ["ip", "-n", b, "link", "set", "lo", "up"],
    ]
    try:
        for command in setup:
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot make network namespaces here: {done.stderr.strip()}")
        yield ("ip", "netns", "exec", a), ("ip", "netns", "exec", b), "10.231.7.1"
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True)
        subprocess.run(["ip", "netns", "del", b], capture_output=True)


def test_across_two_hosts(roles, two_hosts, tmp_path) -> None:
    """The normal way across machines: TLS and a token."""
    import trustme

    host_a, host_b, tracker_ip = two_hosts
    ca = trustme.CA()
    leaf = ca.issue_cert(tracker_ip)
    files = {"ca": ca.cert_pem, "cert": leaf.cert_chain_pems[0], "key": leaf.private_key_pem}
    for name, blob in files.items():
        blob.write_to_path(str(tmp_path / name))
    secret = {"MATCHTRACKER_TOKEN": "across-the-wire"}
    tls = ("--tls-cert", str(tmp_path / "cert"), "--tls-key", str(tmp_path / "key"))
    tracker = roles("tracker", "--listen", f"{tracker_ip}:0", "--timeout", "0.3", *tls, env=secret, prefix=host_a)
    address = tracker.wait_for(r"^Central: listening on (\S+), over TLS\.$")[1]
    assert address.startswith(tracker_ip)
    trust = ("--tls-ca", str(tmp_path / "ca"))
    server = roles("server", "--tracker", address, "--name", "S1", "--number", "6", *trust, env=secret, prefix=host_b)
    server.wait_for(r"^S1: received “Welcome” from Central\.$")
    client = roles(
        "client", "--tracker", address, "--name", "C1", "--rounds", "2", "--number", "6", *trust, env=secret, prefix=host_b
    )
    assert client.finish() == 0, "\n".join(client.lines)
    assert answers(client.lines, "C1") == [(6, ["S1"]), (6, ["S1"])]
    tracker.stop()
    server.wait_for(r"lost Central")
    server.stop()


def test_sigterm_to_a_tracker_answers_the_open_request_first(roles) -> None:
    tracker, address = start_tracker(roles, "--timeout", "1.5")
    server, number = start_server(roles, address, "S1")
    client = roles("client", "--tracker", address, "--name", "C1", "--rounds", "1", "--number", str(number))
    # The request has reached the server: it is open at the tracker, which now stops.
    server.wait_for(r"^S1: received match request of \d+ from C1$")
    tracker.proc.send_signal(signal.SIGTERM)
    assert client.finish() == 0, "\n".join(client.lines)
    assert answers(client.lines, "C1") == [(number, ["S1"])]
    assert tracker.finish() == 0
    server.wait_for(r"lost Central \(it said goodbye\)")
    server.stop()


def test_a_second_signal_stops_a_draining_tracker_at_once(roles) -> None:
    # A request that waits out a long deadline holds the drain; the second signal ends it.
    tracker, address = start_tracker(roles, "--timeout", "60")
    server, number = start_server(roles, address, "S1")
    roles("client", "--tracker", address, "--name", "C1", "--rounds", "1", "--number", str(number % 10 + 1))
    server.wait_for(r"^S1: received match request of \d+ from C1$")
    tracker.proc.send_signal(signal.SIGTERM)
    tracker.wait_for(r"^Central: stopping; answering 1 open request first\.$")
    tracker.proc.send_signal(signal.SIGTERM)
    assert tracker.finish() == 0
    assert any("stopped" in line for line in tracker.lines)
