"""The monitoring port as its users meet it: Prometheus scraping /metrics (Debian's
prometheus and promtool), a load balancer's probes of /healthz and /readyz, an operator's
look at /stats, and the guard on a port beyond loopback."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

import matchtracker as mt
from test_processes import PROJECT, roles, start_server, start_tracker  # noqa: F401 (roles is a fixture)

SHORT = 0.2


def get(address: str, path: str, headers: dict | None = None) -> tuple[int, str, str]:
    """Status, content type and body of GET `path` on the monitor at `address`."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


def sample(text: str, series: str) -> float:
    """The value of one series in Prometheus' text format."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in:\n{text}")


def test_the_endpoints_tell_what_the_tracker_did() -> None:
    with mt.Tracker(timeout=SHORT, monitor="127.0.0.1:0") as tracker:
        with mt.Server("S1", tracker.address, number=3), mt.Client("C1", tracker.address) as client:
            assert client.find_match(3) == ["S1"]
            assert client.find_match(4) == []
            with pytest.raises(mt.RefusedError):
                mt.Client("C1", tracker.address)
            status, kind, text = get(tracker.monitor_address, "/metrics")
            assert status == 200 and kind.startswith("text/plain; version=0.0.4")
            assert sample(text, 'matchtracker_requests_total{end="replied",matched="yes"}') == 1
            assert sample(text, 'matchtracker_requests_total{end="deadline",matched="no"}') == 1
            assert sample(text, 'matchtracker_request_duration_seconds_count{end="deadline"}') == 1
            assert sample(text, 'matchtracker_errors_sent_total{code="name-taken"}') == 1
            assert sample(text, 'matchtracker_nodes{role="server"}') == 1
            assert sample(text, 'matchtracker_nodes{role="client"}') == 1
            assert sample(text, "matchtracker_connections") == 2
            assert sample(text, "matchtracker_open_requests") == 0
            assert re.search(r'^matchtracker_build_info\{version="[^"]+"\} 1$', text, re.M)
            # No node name, no request id, in any label.
            assert "S1" not in text and "C1" not in text
            status, _, stats = get(tracker.monitor_address, "/stats")
            assert status == 200 and json.loads(stats) == tracker.stats()
            assert get(tracker.monitor_address, "/healthz")[:1] == (200,)
            status, _, ready = get(tracker.monitor_address, "/readyz")
            assert status == 200 and json.loads(ready) == {"ready": True}
            status, _, missing = get(tracker.monitor_address, "/nope")
            assert status == 404 and "/metrics" in json.loads(missing)["pages"]


def test_promtool_accepts_the_metrics() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs promtool (Debian's prometheus package)")
    with mt.Tracker(timeout=SHORT, early=True, monitor="127.0.0.1:0") as tracker:
        with mt.Server("S1", tracker.address, number=3), mt.Client("C1", tracker.address) as client:
            client.find_match(3)
            text = get(tracker.monitor_address, "/metrics")[2]
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def listening_port(pid: int) -> int:
    """The TCP port process `pid` listens on (it was given port 0)."""
    listed = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True).stdout
    for line in listed.splitlines():
        if f"pid={pid}," in line:
            return int(line.split()[3].rsplit(":", 1)[1])
    raise AssertionError(f"process {pid} listens nowhere:\n{listed}")


def test_prometheus_scrapes_the_tracker(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None or shutil.which("ss") is None:
        pytest.skip("needs prometheus (Debian's prometheus package) and ss (iproute2)")
    with mt.Tracker(timeout=SHORT, early=True, monitor="127.0.0.1:0") as tracker:
        with mt.Server("S1", tracker.address, number=3), mt.Client("C1", tracker.address) as client:
            asked = 7
            for i in range(asked):
                client.find_match(3 if i % 2 else 5)
            config = tmp_path / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: matchtracker\n"
                f"    static_configs:\n      - targets: ['{tracker.monitor_address}']\n"
            )
            proc = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    "--web.listen-address=127.0.0.1:0",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                for line in proc.stderr:
                    if "Server is ready to receive web requests" in line:
                        break
                port = listening_port(proc.pid)
                query = urllib.parse.urlencode({"query": "sum(matchtracker_requests_total)"})
                # Prometheus scrapes every second: its answer is the count once it has scraped.
                # Prometheus offers no event to wait on, so its query API is asked again (a
                # fifth of a scrape interval apart) until it answers, for at most 30 s.
                until = time.monotonic() + 30
                seen = None
                while time.monotonic() < until:
                    body = json.loads(get(f"127.0.0.1:{port}", f"/api/v1/query?{query}")[2])
                    result = body["data"]["result"]
                    seen = result and float(result[0]["value"][1])
                    if seen == asked:
                        break
                    time.sleep(0.2)
                assert seen == asked, body
            finally:
                proc.terminate()
                proc.wait(timeout=30)


def test_readyz_says_draining_while_the_tracker_answers_what_is_open(roles) -> None:  # noqa: F811
    tracker, address = start_tracker(roles, "--monitor", "127.0.0.1:0", "--timeout", "3")
    monitor = tracker.wait_for(r"^Central: monitoring on http://(\S+) \(")[1]
    start_server(roles, address, "S1", "--number", "3")
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        lines = raw.makefile("r", encoding="utf-8")
        raw.sendall(b"HI C1\n")
        assert lines.readline().startswith("WELCOME")
        raw.sendall(b"FIND 1 4\n")  # nobody holds 4: open until the deadline
        tracker.wait_for(r"^Central: process match request from C1$")
        tracker.proc.terminate()
        tracker.wait_for(r"^Central: stopping; answering 1 open request")
        status, _, body = get(monitor, "/readyz")
        assert status == 503 and json.loads(body)["reason"].startswith("draining")
        assert get(monitor, "/healthz")[0] == 200
        assert lines.readline() == "ANSWER 1 deadline\n"
        assert lines.readline() == "BYE\n"
    assert tracker.finish() == 0


def test_a_monitor_beyond_loopback_asks_for_the_token() -> None:
    with pytest.raises(ValueError, match="reaches beyond this machine and shows node names"):
        mt.Tracker(monitor="0.0.0.0:0")
    with mt.Tracker(token="s3cret-T", monitor="0.0.0.0:0") as tracker:
        at = f"127.0.0.1:{tracker.monitor_address.rsplit(':', 1)[1]}"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-T"}):
            status, _, body = get(at, "/stats", headers)
            assert status == 401 and "Bearer" in json.loads(body)["error"], headers
        assert get(at, "/stats", {"Authorization": "Bearer s3cret-T"})[0] == 200
    # Accepting the risk: open without the token.
    with mt.Tracker(monitor="0.0.0.0:0", monitor_insecure=True) as tracker:
        at = f"127.0.0.1:{tracker.monitor_address.rsplit(':', 1)[1]}"
        assert get(at, "/healthz")[0] == 200
    with pytest.raises(ValueError, match="monitor_insecure needs monitor"):
        mt.Tracker(monitor_insecure=True)


def test_the_command_line_refuses_an_open_monitor_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, str(PROJECT), "tracker", "--monitor", "0.0.0.0:0"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "--monitor-insecure" in done.stderr


def test_connections_lists_each_node_and_the_closed_ones_with_why() -> None:
    with mt.Tracker(timeout=30, monitor="127.0.0.1:0") as tracker:
        host, port = tracker.address.rsplit(":", 1)
        # Both nodes typed by hand: the server's QUERY lines are the moment the client's
        # requests are open at the tracker.
        server = socket.create_connection((host, int(port)), timeout=10)
        queries = server.makefile("r", encoding="utf-8")
        server.sendall(b"HELLO S1\n")
        assert queries.readline().startswith("WELCOME S1 ")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            lines = raw.makefile("r", encoding="utf-8")
            raw.sendall(b"HI C9\n")
            assert lines.readline().startswith("WELCOME")
            raw.sendall(b"FIND 1 4\nFIND 2 5\n")  # the server never replies: both stay open
            assert [queries.readline().split()[0] for _ in range(2)] == ["QUERY", "QUERY"]
            listed = json.loads(get(tracker.monitor_address, "/connections")[2])
            by_name = {c["name"]: c for c in listed["open"]}
            assert set(by_name) == {"S1", "C9"}
            c9 = by_name["C9"]
            assert c9["role"] == "client" and c9["open_requests"] == 2
            assert c9["peer"] == "%s:%d" % raw.getsockname()
            assert c9["bytes_queued"] == 0 and c9["idle_for"] >= 0 and c9["connected_at"] <= time.time()
            assert by_name["S1"]["role"] == "server" and "open_requests" not in by_name["S1"]
            raw.sendall(b"CANCEL 1\nCANCEL 2\nBYE\n")
            # The tracker closes after a client's BYE, once its registration is undone (and
            # listed among the closed ones).
            assert lines.readline() == ""
        listed = json.loads(get(tracker.monitor_address, "/connections")[2])
        (closed,) = listed["closed"]
        assert closed["name"] == "C9" and closed["reason"].startswith("it left")
        assert [c["name"] for c in listed["open"]] == ["S1"]
        assert listed["closed_kept"] == 256
        server.close()
