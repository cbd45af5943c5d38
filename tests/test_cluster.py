"""Trackers acting as one Central over a real NATS cluster (three nats-server processes with
routes and JetStream, started here on free loopback ports): answers right across trackers,
names unique across them, nodes moving to another tracker when theirs is killed, trackers
carrying on when a NATS node is killed, and early mode ending with the cluster's last reply."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

import matchtracker as mt
from nats_cluster import NATS, NatsCluster
from test_processes import PATIENCE, answers, roles, start_server  # noqa: F401 (roles is a fixture)

@pytest.fixture
def nats(tmp_path: Path):
    if not Path(NATS).exists():
        pytest.skip("needs nats-server (Debian's nats-server package)")
    cluster = NatsCluster(tmp_path)
    yield cluster
    cluster.stop()


def start_trackers(roles, nats: NatsCluster, count: int = 3, *args: str) -> list[tuple[object, str]]:
    """`count` trackers of one cluster, each on a NATS node of its own."""
    started = []
    for i in range(count):
        tracker = roles("tracker", "--timeout", "0.5", "--cluster", nats.url(i), "--cluster-name", "t", *args)
        started.append(tracker)
    listening = [(t, t.wait_for(r"^Central: listening on (\S+)\.$")[1]) for t in started]
    # A request waits for the trackers its tracker has heard from: until every tracker has
    # heard the others, an answer may lack their servers (and is never wrong). Tests that
    # want complete answers from the start wait for that moment, not for a while.
    heard = r"^Central: tracker \S+ of the cluster is heard from\.$"
    for tracker, _ in listening:
        for _ in range(count - 1 - sum(1 for line in tracker.lines if re.match(heard, line))):
            tracker.wait_for(heard)
    return listening


def right(lines: list[str], client: str, numbers: dict[str, int]) -> list[tuple[int, list[str]]]:
    """The client's answers, checked against the numbers the servers printed."""
    got = answers(lines, client)
    for asked, servers in got:
        want = sorted((s for s, n in numbers.items() if n == asked), key=lambda s: int(s[1:]))
        assert servers == want, (client, asked, servers, numbers)
    return got


def test_three_trackers_act_as_one_central(roles, nats) -> None:
    trackers = start_trackers(roles, nats)
    numbers = {}
    for i in range(1, 10):
        _, address = trackers[i % 3]
        _, numbers[f"S{i}"] = start_server(roles, address, f"S{i}", "--number", str(i % 4 + 1))
    clients = []
    for i in range(1, 10):
        _, address = trackers[(i + 1) % 3]
        clients.append(roles("client", "--tracker", address, "--name", f"C{i}", "--rounds", "4", "--seed", str(i)))
    for i, client in enumerate(clients, start=1):
        assert client.finish() == 0, "\n".join(client.lines)
        assert len(right(client.lines, f"C{i}", numbers)) == 4


def test_a_name_is_unique_across_the_cluster_and_freed_when_its_node_leaves(roles, nats) -> None:
    (_, a), (_, b), _ = start_trackers(roles, nats)
    first, _ = start_server(roles, a, "S1")
    taken = roles("server", "--tracker", b, "--name", "S1", "--wait", "2")
    assert taken.finish() == 1
    assert "name-taken" in taken.lines[-1], taken.lines
    client = roles("client", "--tracker", b, "--name", "S1", "--rounds", "1", "--wait", "2")
    assert client.finish() == 1 and "name-taken" in client.lines[-1]
    first.stop()
    again, _ = start_server(roles, b, "S1")  # free once its node has left
    again.stop()


def test_nodes_move_when_their_tracker_is_killed(roles, nats) -> None:
    trackers = start_trackers(roles, nats)
    addresses = ",".join(address for _, address in trackers)
    numbers = {}
    servers = {}
    for i in range(1, 7):
        # Each server knows every tracker and starts with a different one.
        mine = ",".join(address for _, address in trackers[i % 3:] + trackers[: i % 3])
        servers[f"S{i}"], numbers[f"S{i}"] = start_server(roles, mine, f"S{i}", "--number", str(i % 3 + 1))
    victim, _ = trackers[1]
    victim.kill()
    moved = [s for i, s in servers.items() if int(i[1:]) % 3 == 1]
    for server in moved:
        server.wait_for(r"received “Welcome” from Central")
    client = roles("client", "--tracker", addresses, "--name", "C1", "--rounds", "3", "--seed", "4")
    assert client.finish() == 0, "\n".join(client.lines)
    assert len(right(client.lines, "C1", numbers)) == 3


def test_trackers_carry_on_when_a_nats_node_dies(roles, nats) -> None:
    trackers = start_trackers(roles, nats)
    for i in range(1, 4):
        start_server(roles, trackers[i - 1][1], f"S{i}", "--number", "2")
    nats.kill(1)  # the tracker on it moves to another NATS node by itself
    everyone = ["S1", "S2", "S3"]
    for i, (_, address) in enumerate(trackers):
        # While the cluster recovers an answer may lack servers, but never names a wrong
        # one; within a few seconds it is complete again.
        give_up = time.monotonic() + 10
        while True:
            client = roles("client", "--tracker", address, "--name", f"C{i}", "--number", "2", "--rounds", "1")
            assert client.finish() == 0, "\n".join(client.lines)
            [(asked, servers)] = answers(client.lines, f"C{i}")
            assert asked == 2 and set(servers) <= set(everyone), servers
            if servers == everyone or time.monotonic() > give_up:
                break
        assert servers == everyone


def test_a_tracker_cut_off_from_the_cluster_drops_its_nodes(roles, nats) -> None:
    """Without its lease a tracker may not keep a name that another tracker could give out:
    it drops its nodes, and refuses new ones, until it holds its lease again."""
    (tracker, address), = start_trackers(roles, nats, 1)
    server, _ = start_server(roles, address, "S1")
    for i in range(3):
        nats.kill(i)
    tracker.wait_for(r"cannot renew its place in the cluster; dropping its nodes")
    server.wait_for(r"^S1: lost Central \(refused by the tracker: internal: this tracker is cut off from its cluster")
    client = roles("client", "--tracker", address, "--name", "C1", "--rounds", "1", "--wait", "1")
    assert client.finish() == 1 and "cut off from its cluster" in client.lines[-1], client.lines


def test_early_mode_ends_with_the_clusters_last_reply(nats) -> None:
    """A deadline far longer than the test: the answer says `replied`, so it came when the
    last server of the cluster had replied, not at the deadline."""
    options = {"timeout": 60.0, "early": True, "cluster_name": "early"}
    with mt.Tracker(cluster=[nats.url(0)], **options) as a, mt.Tracker(cluster=[nats.url(2)], **options) as b:
        with mt.Server("S1", a.address, 3), mt.Server("S2", b.address, 3), mt.Server("S3", b.address, 4):
            host, port = a.address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=PATIENCE) as raw:
                lines = raw.makefile("rw", encoding="utf-8", newline="\n")
                lines.write("HI C1\n")
                lines.flush()
                assert lines.readline().startswith("WELCOME C1 ")
                # The other tracker may take a moment to be heard from: ask until it is.
                give_up = time.monotonic() + PATIENCE
                while True:
                    lines.write("FIND 1 3\n")
                    lines.flush()
                    answer = lines.readline().strip()
                    if answer == "ANSWER 1 replied S1 S2" or time.monotonic() > give_up:
                        break
                assert answer == "ANSWER 1 replied S1 S2"


def test_cluster_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="cluster name"):
        mt.Tracker(cluster=["nats://127.0.0.1:1"], cluster_name="no spaces")
    with pytest.raises(ValueError, match="needs cluster"):
        mt.Tracker(cluster_name="x")
    with pytest.raises(ValueError, match="not a NATS url"):
        mt.Tracker(cluster=["nats://[bad"])


def test_a_rolling_restart_of_the_trackers_loses_no_answer(roles, nats) -> None:
    trackers = start_trackers(roles, nats)
    addresses = [address for _, address in trackers]
    numbers = {}
    for i in range(1, 4):
        # Each server knows every tracker and starts with a different one.
        mine = ",".join(addresses[i % 3 :] + addresses[: i % 3])
        _, numbers[f"S{i}"] = start_server(roles, mine, f"S{i}", "--number", str(i))
    rounds = 16
    client = roles("client", "--tracker", ",".join(addresses), "--name", "C1", "--rounds", str(rounds), "--seed", "3")
    for i, (tracker, address) in enumerate(trackers):
        client.wait_for(r"^C1: find match of")  # the load is under way
        # Stopped while a request may be open: it is answered, then the nodes move on BYE.
        assert tracker.stop() == 0
        again = roles("tracker", "--timeout", "0.5", "--cluster", nats.url(i), "--cluster-name", "t", "--listen", address)
        again.wait_for(r"^Central: listening on")
    assert client.finish() == 0, "\n".join(client.lines)
    got = answers(client.lines, "C1")
    assert len(got) == rounds, "\n".join(client.lines)
    for asked, servers in got:
        # While a tracker drains, its servers are not asked by the others: an answer may lack
        # them, but never names a server that does not hold the number.
        assert set(servers) <= {s for s, n in numbers.items() if n == asked}, (asked, servers)
    assert not any("failed" in line for line in client.lines), "\n".join(client.lines)


def test_a_library_client_moves_to_another_tracker_when_its_own_is_killed(roles, nats) -> None:
    (first, a), (_, b), _ = start_trackers(roles, nats)
    start_server(roles, b, "S1", "--number", "3")
    with mt.Client("C1", f"{a},{b}") as client:
        assert client.find_match(3) == ["S1"]
        first.kill()
        # The same object: its call finds the connection gone and moves to the next tracker.
        # Its name is free there once the killed tracker's lease on it has lapsed (a second
        # or two, docs/CLUSTER.md); until then a call may end in its own time, saying so, and
        # the next one tries again. An answer, when it comes, is right.
        give_up = time.monotonic() + 15
        while True:
            try:
                assert client.find_match(3) == ["S1"]
                break
            except (mt.ResponseTimeout, mt.NetworkError):
                assert time.monotonic() < give_up, "the client never came back"
        assert client.find_match(4) == []
