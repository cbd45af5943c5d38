"""Resources under repetition and limits: nothing leaks across runs, a run too large for the
open-files limit is refused up front, and running out of descriptors does not break the
tracker."""

from __future__ import annotations

import gc
import os
import resource
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from matchtracker import Client, Server, Tracker, run_simulation

PROJECT = Path(__file__).resolve().parent.parent / "project.py"

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc (Linux)")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_200_runs_leave_descriptors_and_threads_where_they_were() -> None:
    run_simulation(2, 1, timeout=0.01, quiet=True)  # starts the shared runtime
    # Earlier tests' garbage (closed event loops, sockets in reference cycles) goes now,
    # not in the middle of the count.
    gc.collect()
    fds, tasks, rss = open_fds(), threads(), rss_kib()
    for i in range(200):
        report = run_simulation(3, 1, timeout=0.01, seed=i, quiet=True)
        assert len(report.requests) == 3
    gc.collect()
    # No growth over 200 runs (one descriptor of an earlier test may close meanwhile).
    assert open_fds() <= fds
    assert threads() == tasks
    # Reported, not asserted: memory is measured by the benchmark.
    print(f"\nRSS before {rss} KiB, after 200 runs {rss_kib()} KiB")


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def test_a_run_too_large_for_the_open_files_limit_is_refused_before_it_starts() -> None:
    result = run_python(
        """
        import resource, matchtracker
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        try:
            matchtracker.run_simulation(100, 1, timeout=0.01, quiet=True)
        except ValueError as e:
            print(e)
        """
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    assert "needs about 401 open files but only" in message and "available" in message


def test_the_command_line_refuses_it_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT), "100", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)),
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "open files" in result.stderr


def test_running_out_of_descriptors_does_not_break_the_tracker() -> None:
    """A tracker limited to 64 descriptors is flooded with connections; once they go, it
    serves again."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import resource, sys, matchtracker
                resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
                tracker = matchtracker.Tracker(timeout=0.2)
                print(tracker.address, flush=True)
                sys.stdin.read()
                tracker.close()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = proc.stdout.readline().strip()
        host, port = address.rsplit(":", 1)
        flood = [socket.create_connection((host, int(port))) for _ in range(150)]
        # The tracker could not take them all; it is alive and backing off, not crashed.
        assert proc.poll() is None
        for s in flood:
            s.close()
        with Server("S1", address, number=4), Client("C1", address) as client:
            assert client.find_match(4) == ["S1"]
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()


def in_small_port_range(ports: int) -> list[str]:
    """A command prefix that runs its command in a network namespace of its own whose
    outgoing connections have only `ports` local ports to use."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and iproute2 to narrow the local port range")
    script = (
        f'ip link set lo up && echo "40000 {40000 + ports - 1}" > /proc/sys/net/ipv4/ip_local_port_range'
        ' && exec "$@"'
    )
    prefix = ["unshare", "-n", "sh", "-c", script, "sh"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.strip()}")
    return prefix


def test_a_run_needing_more_local_ports_than_the_range_is_refused_before_it_starts() -> None:
    prefix = in_small_port_range(10)
    code = """
        import matchtracker
        try:
            matchtracker.run_simulation(8, 1, timeout=0.01, quiet=True)
        except ValueError as e:
            print(e)
        """
    result = subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "connects from 16 local ports but only 10 are allowed" in result.stdout
    result = subprocess.run(
        [*prefix, sys.executable, str(PROJECT), "8", "--quiet"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "local ports" in result.stderr, result.stderr


def test_running_out_of_local_ports_says_so() -> None:
    """With 10 local ports (one of them the tracker's own), the tenth client cannot connect:
    the error names the cause instead of the kernel's "cannot assign requested address"."""
    prefix = in_small_port_range(10)
    code = """
        import matchtracker
        tracker = matchtracker.Tracker(timeout=0.2)
        clients = []
        try:
            for i in range(1, 12):
                clients.append(matchtracker.Client(f"C{i}", tracker.address))
        except matchtracker.NetworkError as e:
            print(len(clients), e)
        """
    result = subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    connected, message = result.stdout.split(" ", 1)
    assert connected == "9"
    assert "no local port is free to connect to 127.0.0.1:" in message
