"""The roles as services that run for weeks: clear give-up rules, half-close with real `nc`,
vanished peers, bounded printing, and the command line's edges."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import matchtracker
from matchtracker import Client, NetworkError, RefusedError, Server, Tracker
from test_processes import PROJECT, Role, answers, roles, start_server, start_tracker, two_hosts  # noqa: F401

SHORT = 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT), *args], capture_output=True, text=True, encoding="utf-8", timeout=timeout
    )


def test_a_taken_name_ends_a_node_with_one_line_and_exit_1(roles) -> None:
    tracker, address = start_tracker(roles)
    start_server(roles, address, "S1")
    for role in ("server", "client"):
        result = project(role, "--tracker", address, "--name", "S1", "--wait", "5")
        assert result.returncode == 1, result
        last = result.stdout.splitlines()[-1:] + result.stderr.splitlines()
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"project.py {role}: failed: ") and "name-taken" in result.stderr
        assert "trying again" not in result.stdout, last
    # The tracker was not flooded with refusals: one each.
    tracker.stop()
    assert sum("Error name-taken" in line for line in tracker.lines) == 2, tracker.lines


def test_an_unreachable_tracker_is_given_up_after_the_wait(roles) -> None:
    address = f"127.0.0.1:{free_port()}"
    for role in ("server", "client"):
        started = time.monotonic()
        result = project(role, "--tracker", address, "--name", "X1", "--wait", "0.5")
        assert result.returncode == 1, result
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert f"cannot reach the tracker at {address} after trying for 0.5 s" in result.stderr
        assert time.monotonic() - started < 10
    result = project("server", "--tracker", "no-such-host.invalid:7000", "--name", "X1", "--wait", "0.3")
    assert result.returncode == 1 and "no-such-host.invalid:7000" in result.stderr, result.stderr
    with pytest.raises(NetworkError, match="cannot reach the tracker"):
        matchtracker.run_client("C1", address, 1, wait=0.3)


def test_a_registered_node_that_loses_its_tracker_gives_up_after_reconnect_for(roles) -> None:
    tracker, address = start_tracker(roles)
    server = roles("server", "--tracker", address, "--name", "S1", "--reconnect-for", "1")
    server.wait_for(r"^S1: received “Welcome” from Central\.$")
    tracker.stop()
    server.wait_for(r"^S1: lost Central")
    assert server.finish() == 1
    assert any("cannot reach the tracker" in line for line in server.lines), server.lines


def test_real_nc_gets_every_answer_after_its_half_close(roles) -> None:
    nc = shutil.which("nc")
    if nc is None:
        # .ci/run installs it, so this runs there; elsewhere it needs Debian's netcat-openbsd.
        pytest.skip("needs `nc` (Debian's netcat-openbsd)")
    tracker, address = start_tracker(roles)
    start_server(roles, address, "S1", "--number", "5")
    host, port = address.rsplit(":", 1)
    result = subprocess.run(
        [nc, "-N", host, port], input="HI C9\nFIND 1 5\nFIND 2 6\n", capture_output=True, text=True, timeout=30
    )
    assert result.stdout.splitlines() == ["WELCOME C9 300 matches", "ANSWER 1 replied S1", "ANSWER 2 deadline"]


def test_a_raw_socket_gets_its_answers_after_bye() -> None:
    with Tracker(timeout=SHORT) as tracker, Server("S1", tracker.address, number=5):
        host, port = tracker.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"HI C9\nFIND 1 5\nBYE\n")
            received = b""
            while chunk := s.recv(4096):
                received += chunk
        assert received.decode().splitlines() == ["WELCOME C9 200 matches", "ANSWER 1 replied S1"]


def test_a_peer_whose_host_vanishes_is_dropped_and_idle_live_ones_stay(roles, two_hosts) -> None:
    host_a, host_b, tracker_ip = two_hosts
    token = {"MATCHTRACKER_TOKEN": "vanishing"}
    tracker = roles(
        "tracker", "--listen", f"{tracker_ip}:0", "--keepalive", "1", "--early", "--insecure-plaintext", env=token, prefix=host_a
    )
    address = tracker.wait_for(r"^Central: listening on (\S+)\.$")[1]
    idle = roles("server", "--tracker", address, "--name", "S1", "--number", "3", env=token, prefix=host_a)
    idle.wait_for(r"^S1: received “Welcome” from Central\.$")
    gone = roles("server", "--tracker", address, "--name", "S2", "--number", "3", env=token, prefix=host_b)
    gone.wait_for(r"^S2: received “Welcome” from Central\.$")
    # S2's host drops off the network: no FIN, no RST, its packets simply stop.
    subprocess.run(["ip", "-n", host_b[-1], "link", "set", f"mtb{os.getpid() % 100000}", "down"], check=True)
    started = time.monotonic()
    tracker.wait_for(r"^Central: dropping Server S2: ")
    assert time.monotonic() - started < 15, "found out well within 15 s"
    # S1 said nothing all this while, and stays: a request still finds it, and only it.
    client = roles("client", "--tracker", address, "--name", "C1", "--number", "3", "--rounds", "1", env=token, prefix=host_a)
    assert client.finish() == 0, client.lines
    assert answers(client.lines, "C1") == [(3, ["S1"])]
    assert not any("dropping Server S1" in line for line in tracker.lines)


def test_a_role_whose_output_falls_behind_drops_lines_not_answers() -> None:
    """A tracker whose stdout nobody reads keeps answering, holds a bounded number of lines,
    and says how many it did not print once its output moves again."""
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT), "tracker", "--early"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        address = proc.stdout.readline().split("listening on ")[1].rstrip(".\n")
        # Each request is five lines: load it until that is far more than the pipe (about a
        # thousand lines) and the role's queue (16,384) hold, while nobody reads.
        requests = 0
        while requests < 8_000:
            requests += matchtracker.run_load(1, 4, 0.5, tracker=address)["requests"]
        # The tracker still answers at once.
        with Server("S9", address, number=4), Client("C9", address) as client:
            assert client.find_match(4) == ["S9"]
        # Now read: the lines held come out, then the count of those that were not.
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        printed = 1
        while "lines not printed (the output fell behind)" not in (line := lines.get(timeout=30)):
            printed += 1
        assert printed < 5 * requests
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_sigterm_stops_a_simulation_like_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT), "3", "--timeout", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    # Wait for the run itself to be under way: the first request line.
    for line in proc.stdout:
        if "find match of" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert err.strip().splitlines() == ["project.py: stopped (SIGTERM)"]


def test_a_diagram_that_cannot_be_written_is_refused_before_the_run() -> None:
    started = time.monotonic()
    result = project("3", "--timeout", "5", "--diagram", "/nonexistent/x.svg")
    assert result.returncode == 2 and result.stdout == ""
    assert "folder /nonexistent does not exist" in result.stderr
    assert time.monotonic() - started < 5, "refused before the 25-second run"


def test_the_diagram_says_where_it_went(tmp_path) -> None:
    path = tmp_path / "run.svg"
    result = project("2", "--rounds", "1", "--timeout", "0.05", "--diagram", str(path))
    assert result.returncode == 0 and path.exists()
    assert result.stderr.strip() == f"project.py: diagram written to {path}"


def test_wait_for_nodes_waits_for_at_least() -> None:
    with Tracker(timeout=SHORT) as tracker, Server("S1", tracker.address), Client("C1", tracker.address):
        tracker.wait_for_nodes(1, timeout=5)
        tracker.wait_for_nodes(1, 1, timeout=5)


@pytest.mark.parametrize(
    "args, word",
    [
        (["bench", "--scale", "10", "--servers", "3"], "--servers: for the closed loop, not --scale"),
        (["tracker", "--keepalive", "0"], "keepalive must be more than 0"),
        (["server", "--tracker", "127.0.0.1:1", "--name", "S1", "--wait", "-1"], "wait must be more than 0"),
    ],
)
def test_more_mistakes_are_one_line_and_exit_2(args: list[str], word: str) -> None:
    result = project(*args)
    assert result.returncode == 2, result
    assert len(result.stderr.splitlines()) == 1 and word in result.stderr, result.stderr


def test_a_busy_port_names_the_role(roles) -> None:
    tracker, address = start_tracker(roles)
    result = project("tracker", "--listen", address)
    assert result.returncode == 1
    assert result.stderr.startswith("project.py tracker: failed: ") and len(result.stderr.splitlines()) == 1


def test_run_load_counts_requests_as_an_int() -> None:
    result = matchtracker.run_load(2, 2, 0.2, timeout=SHORT)
    assert isinstance(result["requests"], int) and result["requests"] > 0
    with Tracker(timeout=SHORT, early=True) as tracker:
        against = matchtracker.run_load(2, 2, 0.2, tracker=tracker.address)
        assert against["requests"] > 0 and tracker.stats()["requests"] == against["requests"]


def test_refused_errors_carry_their_code_from_the_roles() -> None:
    with Tracker(timeout=SHORT, token="right") as tracker:
        with pytest.raises(RefusedError) as caught:
            matchtracker.run_client("C1", tracker.address, 1, token="wrong", wait=5)
        assert caught.value.code == "unauthorized"


def test_bench_loads_a_tracker_that_wants_a_token_and_names_one_it_cannot_reach() -> None:
    with matchtracker.Tracker(timeout=0.2, early=True, token="s3cret") as tracker:
        load = ["bench", "--tracker", tracker.address, "--servers", "1", "--clients", "1", "--duration", "0.3", "--json"]
        env = {**os.environ, "MATCHTRACKER_TOKEN": "s3cret"}
        result = subprocess.run([sys.executable, str(PROJECT), *load], capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["requests"] > 0
        flag = project(*load, "--token", "s3cret")
        assert flag.returncode == 0, flag.stderr
        refused = project(*load)
        assert refused.returncode == 1 and "unauthorized" in refused.stderr, refused.stderr
    port = free_port()
    gone = project("bench", "--tracker", f"127.0.0.1:{port}", "--duration", "0.3")
    assert gone.returncode == 1
    assert gone.stderr.splitlines() == [gone.stderr.strip()] and f"127.0.0.1:{port}" in gone.stderr, gone.stderr
