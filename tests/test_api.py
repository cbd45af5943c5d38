"""The Python API: run_simulation, the node classes, errors, and the stubs."""

from __future__ import annotations

import ast
import json
import math
import re
import os
import signal
import socket
import threading
from pathlib import Path

import pytest

import matchtracker
from matchtracker import (
    Client,
    MatchTrackerError,
    NetworkError,
    RefusedError,
    ResponseTimeout,
    Server,
    Tracker,
    run_simulation,
)

SHORT = 0.2


def expected(numbers: dict[str, int], number: int) -> list[str]:
    return sorted((s for s, k in numbers.items() if k == number), key=lambda s: int(s[1:]))


def test_report_answers_are_right_and_serialisable() -> None:
    report = run_simulation(4, 2, timeout=SHORT, seed=5, quiet=True)
    assert (report.n, report.rounds, report.timeout, report.seed, report.early) == (4, 2, SHORT, 5, False)
    assert sorted(report.numbers) == ["S1", "S2", "S3", "S4"]
    assert all(1 <= k <= 10 for k in report.numbers.values())
    assert len(report.requests) == 8
    for r in report.requests:
        assert r.servers == expected(report.numbers, r.number)
        assert r.end in ("replied", "deadline")
        assert r.deadline == (r.end == "deadline")
        assert r.elapsed > 0
    assert [r.round for r in report.requests] == [1] * 4 + [2] * 4
    assert report.duration >= 2 * SHORT
    data = json.loads(json.dumps(report.to_dict()))
    assert data["numbers"] == report.numbers
    assert [d["servers"] for d in data["requests"]] == [r.servers for r in report.requests]


def test_the_transcript_goes_through_sys_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_simulation(2, 1, timeout=SHORT, seed=1)
    out = capsys.readouterr().out.splitlines()
    assert out == report.transcript
    assert "S1: sending “Hello” to Central." in out


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_simulation(2, 1, timeout=SHORT, quiet=True)
    assert capsys.readouterr().out == ""
    assert report.transcript == []


def test_early_mode_ends_requests_when_every_server_replied() -> None:
    # A long deadline: the run can only be short if requests end on the replies.
    report = run_simulation(3, 2, timeout=60.0, seed=2, early=True, quiet=True)
    assert all(r.end == "replied" for r in report.requests)
    for r in report.requests:
        assert r.servers == expected(report.numbers, r.number)


@pytest.mark.parametrize(
    "args, kwargs, word",
    [
        ((1,), {}, "n must be at least 2"),
        ((0,), {}, "n must be at least 2"),
        ((-3,), {}, "n must be at least 2"),
        ((10**6,), {}, "n must be at most"),
        ((2, 0), {}, "rounds must be at least 1"),
        ((2,), {"timeout": 0}, "timeout must be more than 0"),
        ((2,), {"timeout": -1.0}, "timeout must be more than 0"),
        ((2,), {"timeout": math.nan}, "timeout must be more than 0"),
        ((2,), {"seed": -1}, "seed must be an integer"),
    ],
)
def test_bad_arguments_raise_value_error(args: tuple, kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        run_simulation(*args, **kwargs)


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: run_simulation(3, rounds="x"), "rounds must be an int, not str"),
        (lambda: run_simulation(3, rounds=True), "rounds must be an int, not bool"),
        (lambda: run_simulation(3, rounds=2.0), "rounds must be an int, not float"),
        (lambda: run_simulation("3"), "n must be an int, not str"),
        (lambda: run_simulation(3, timeout="2"), "timeout must be a number of seconds (an int or a float), not str"),
        (lambda: run_simulation(3, timeout=True), "timeout must be a number of seconds (an int or a float), not bool"),
        (lambda: run_simulation(3, seed="7"), "seed must be an int, not str"),
        (lambda: Tracker(port="7000"), "port must be an int, not str"),
        (lambda: Server("S1", "127.0.0.1:1", number=True), "number must be an int, not bool"),
        (lambda: matchtracker.run_load(True, 1, 1.0), "servers must be an int, not bool"),
    ],
)
def test_arguments_of_the_wrong_type_raise_type_error_naming_them(make, word: str) -> None:
    # Checked before anything starts: none of these reaches a network or runs a round.
    with pytest.raises(TypeError, match=re.escape(word)):
        make()


def test_wait_for_nodes_checks_its_counts() -> None:
    with Tracker(timeout=SHORT) as tracker:
        with pytest.raises(TypeError, match="servers must be an int, not bool"):
            tracker.wait_for_nodes(True)
        with pytest.raises(ValueError, match="servers must be at least 0"):
            tracker.wait_for_nodes(-1)


def test_nodes_work_on_their_own() -> None:
    with Tracker(timeout=SHORT) as tracker:
        host, port = tracker.address.rsplit(":", 1)
        assert tracker.port == int(port) > 0 and host == "127.0.0.1"
        with Server("S1", tracker.address, number=4), Server("S2", (host, tracker.port), number=7), Server(
            "S3", tracker.address, number=4
        ):
            tracker.wait_for_nodes(3)
            with Client("C1", tracker.address) as client:
                assert client.find_match(4) == ["S1", "S3"]
                assert client.find_match(7) == ["S2"]
                assert client.find_match(1) == []
            stats = tracker.stats()
            assert stats["requests"] == 3 and stats["servers"] == 3
        tracker.wait_for_nodes(0)


def test_a_server_draws_its_number_when_none_is_given() -> None:
    with Tracker(timeout=SHORT) as tracker, Server("S1", tracker.address) as server:
        assert 1 <= server.number <= 10
        with Client("C1", tracker.address) as client:
            assert client.find_match(server.number) == ["S1"]


def test_nodes_can_be_used_from_threads() -> None:
    with Tracker(timeout=SHORT) as tracker:
        servers = [Server(f"S{i}", tracker.address, number=i) for i in range(1, 6)]
        results: dict[int, list[str]] = {}

        def ask(i: int) -> None:
            with Client(f"C{i}", tracker.address) as client:
                results[i] = client.find_match(i)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(1, 6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: [f"S{i}"] for i in range(1, 6)}
        for s in servers:
            s.close()


def test_close_is_idempotent_and_a_closed_node_says_so() -> None:
    tracker = Tracker(timeout=SHORT)
    client = Client("C1", tracker.address)
    server = Server("S1", tracker.address, number=1)
    for node in (client, server, tracker):
        node.close()
        node.close()
    with pytest.raises(MatchTrackerError, match="closed"):
        client.find_match(1)
    with pytest.raises(MatchTrackerError, match="closed"):
        tracker.stats()


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda a: Server("S 1", a), "name must be"),
        (lambda a: Server("", a), "name must be"),
        (lambda a: Server("S" * 33, a), "name must be"),
        (lambda a: Server("S1", a, number=11), "number must be from 1 to 10"),
        (lambda a: Server("S1", a, number=0), "number must be from 1 to 10"),
        (lambda a: Client("C1", "no-port"), "tracker address must be"),
        (lambda a: Client("C1", ("127.0.0.1", 70000)), "tracker address must be"),
        (lambda a: Tracker(port=-1), "port must be"),
        (lambda a: Tracker(timeout=0), "timeout must be"),
    ],
)
def test_bad_node_arguments_raise_value_error(make, word: str) -> None:
    with Tracker(timeout=SHORT) as tracker:
        with pytest.raises(ValueError, match=word):
            make(tracker.address)


def test_find_match_checks_its_number() -> None:
    with Tracker(timeout=SHORT) as tracker, Client("C1", tracker.address) as client:
        for bad in (0, 11, -1):
            with pytest.raises(ValueError, match="number must be from 1 to 10"):
                client.find_match(bad)


def free_port() -> int:
    """A port nothing listens on: bound, read, released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracker_raises_network_error() -> None:
    with pytest.raises(NetworkError) as caught:
        Client("C1", f"127.0.0.1:{free_port()}")
    assert issubclass(NetworkError, MatchTrackerError)
    # Only refusals and malformed lines carry a protocol code.
    assert caught.value.code is None and MatchTrackerError.code is None


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: matchtracker.run_simulation(2**70), "n must be at most 100000 (got 1180591620717411303424)"),
        (lambda: matchtracker.run_simulation(3, -(2**200)), "rounds must be at least 1"),
        (lambda: Tracker(port=2**64), "port must be at most 65535"),
        (lambda: Server("S1", "127.0.0.1:1", number=2**100), "number must be from 1 to 10"),
    ],
)
def test_ints_of_any_size_are_checked_against_their_range(make, word: str) -> None:
    with pytest.raises(ValueError, match=re.escape(word)):
        make()


def test_a_taken_name_is_refused() -> None:
    with Tracker(timeout=SHORT) as tracker, Server("S1", tracker.address, number=1):
        with pytest.raises(RefusedError, match="name-taken") as caught:
            Server("S1", tracker.address, number=2)
        assert caught.value.code == "name-taken"
        with pytest.raises(RefusedError) as caught:
            Client("S1", tracker.address)
        assert caught.value.code == "name-taken"


def test_a_departed_tracker_raises_network_error() -> None:
    tracker = Tracker(timeout=SHORT)
    client = Client("C1", tracker.address)
    tracker.close()
    with pytest.raises(NetworkError):
        client.find_match(3)


def test_ctrl_c_interrupts_a_blocking_call() -> None:
    """A raw server that never replies; when its query arrives, SIGINT this process."""
    with Tracker(timeout=60.0) as tracker:
        host, port = tracker.address.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)))
        raw.sendall(b"HELLO S1\n")
        lines = raw.makefile("r", encoding="utf-8")
        assert lines.readline().startswith("WELCOME S1 ")

        def interrupt_on_query() -> None:
            if lines.readline().startswith("QUERY "):
                os.kill(os.getpid(), signal.SIGINT)

        watcher = threading.Thread(target=interrupt_on_query)
        watcher.start()
        with Client("C1", tracker.address) as client:
            with pytest.raises(KeyboardInterrupt):
                client.find_match(5)
        watcher.join()
        raw.close()


def test_the_stub_names_what_the_module_exports() -> None:
    stub = Path(matchtracker.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    exported = {n for n in dir(matchtracker._core) if not n.startswith("_")} | {"__version__"}
    # The private functions the package's own Python uses are in the stub too (stubtest
    # checks their signatures); the public names are exactly those exported.
    assert {n for n in names if not n.startswith("_")} | {"__version__"} == exported
    # Beside what _core exports, the package's own pure-Python helpers.
    assert set(matchtracker.__all__) == exported | {"watch"}
    assert (stub.parent / "py.typed").exists()


def test_a_token_guards_the_tracker() -> None:
    with Tracker(timeout=SHORT, token="s3cret") as tracker:
        with Server("S1", tracker.address, number=2, token="s3cret"), Client(
            "C1", tracker.address, token="s3cret"
        ) as client:
            assert client.find_match(2) == ["S1"]
        for token in (None, "wrong"):
            with pytest.raises(RefusedError, match="unauthorized") as caught:
                Client("C2", tracker.address, token=token)
            assert "s3cret" not in str(caught.value)
            assert caught.value.code == "unauthorized"


def test_listening_beyond_loopback_needs_tls_and_a_token() -> None:
    with pytest.raises(ValueError, match="needs TLS .* and a token"):
        Tracker(host="0.0.0.0")
    with pytest.raises(ValueError, match="needs a token"):
        Tracker(host="0.0.0.0", insecure_plaintext=True)
    with pytest.raises(ValueError, match="needs TLS"):
        Tracker(host="0.0.0.0", token="t")
    Tracker(host="0.0.0.0", token="t", insecure_plaintext=True).close()
    Tracker(host="0.0.0.0", insecure_no_token=True, insecure_plaintext=True).close()
    with pytest.raises(ValueError, match="token must be"):
        Tracker(token="has space")


def test_the_stubs_match_the_runtime() -> None:
    """mypy's stubtest compares every name, signature and default in _core.pyi with the
    module itself; the allowlist holds only what PyO3 does differently, each with a reason."""
    import subprocess
    import sys

    allowlist = Path(__file__).with_name("stubtest-allowlist.txt")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "matchtracker._core", "--allowlist", str(allowlist)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_error_code_type_lists_the_documented_codes() -> None:
    """`matchtracker.types.ErrorCode` names the codes of docs/PROTOCOL.md's table (the Rust
    table is checked against the same document)."""
    import typing

    from matchtracker.types import ErrorCode

    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    table = doc.split("| code | when | closes |")[1].split("\n\n")[0]
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert set(typing.get_args(ErrorCode)) == documented


def test_closing_a_tracker_answers_the_requests_it_has_open() -> None:
    tracker = Tracker(timeout=0.5)
    with Server("S1", tracker.address, number=4), socket.create_connection((tracker.host, tracker.port)) as silent:
        # A server that never replies: the request lasts its deadline.
        silent.sendall(b"HELLO S2\n")
        lines = silent.makefile("r")
        assert lines.readline().startswith("WELCOME S2 ")
        tracker.wait_for_nodes(2)
        with Client("C1", tracker.address) as client:
            answer: list = []
            asking = threading.Thread(target=lambda: answer.append(client.find_match(4)))
            asking.start()
            assert lines.readline().startswith("QUERY ")  # the request is open at the tracker
            tracker.close()
            asking.join()
            assert answer == [["S1"]]
            assert lines.readline() == "BYE\n"


def test_exceptions_belong_to_the_package_and_pickle_with_their_code() -> None:
    import pickle

    for cls in (MatchTrackerError, NetworkError, RefusedError, ResponseTimeout):
        assert cls.__module__ == "matchtracker"
        again = pickle.loads(pickle.dumps(cls("why")))
        assert type(again) is cls and str(again) == "why" and again.code is None
    with Tracker(timeout=SHORT) as tracker, Server("S1", tracker.address):
        with pytest.raises(RefusedError) as refused:
            Server("S1", tracker.address)
    again = pickle.loads(pickle.dumps(refused.value))
    assert type(again) is RefusedError and again.code == "name-taken" and str(again) == str(refused.value)


def test_the_types_module_comes_with_the_package() -> None:
    import subprocess
    import sys

    code = "import matchtracker; print(sorted(matchtracker.types.Totals.__annotations__)[0])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "closing"


def test_a_node_may_not_take_the_trackers_name() -> None:
    with Tracker(timeout=SHORT) as tracker:
        with pytest.raises(ValueError, match="the tracker's own"):
            Server("Central", tracker.address)
        with pytest.raises(ValueError, match="the tracker's own"):
            Client("Central", tracker.address)


def test_ctrl_c_takes_the_progress_line_off_the_terminal_first() -> None:
    import subprocess
    import sys

    code = (
        "import sys, matchtracker\n"
        "try:\n"
        "    matchtracker.run_simulation(3, rounds=50, timeout=0.5, quiet=True, progress=True)\n"
        "except KeyboardInterrupt:\n"
        "    sys.stderr.write('stopped\\n')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    seen = b""
    while b"requests answered" not in seen:  # the progress line is up
        chunk = proc.stderr.read1(4096)
        assert chunk, seen
        seen += chunk
    proc.send_signal(signal.SIGINT)
    seen += proc.stderr.read()
    assert proc.wait(timeout=30) == 0
    assert seen.endswith(b"\r\x1b[Kstopped\n"), seen[-80:]


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"nope": 1}, TypeError, "Tracker() got an unexpected keyword argument 'nope'"),
        ({"early": 1}, TypeError, "early must be True or False, not int"),
        ({"token": 5}, TypeError, "token must be a str or None, not int"),
        ({"keepalive": "5"}, TypeError, "keepalive must be a number of seconds"),
        ({"keepalive": 0}, ValueError, "keepalive must be more than 0"),
    ],
)
def test_the_tracker_options_are_checked_by_name(kwargs: dict, error: type, word: str) -> None:
    # The same options, defined once, for all three ways to start a tracker.
    with pytest.raises(error, match=re.escape(word)):
        Tracker(**kwargs)
    with pytest.raises(error, match=re.escape(word.replace("Tracker()", "serve_tracker()"))):
        matchtracker.serve_tracker("127.0.0.1:0", **kwargs)
