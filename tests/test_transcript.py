"""./project.py as a user runs it: every printed answer is right given the numbers the servers
printed, every line the assignment shows appears as often as it must, and in causal order."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "project.py"
ROUNDS = 3

HELLO = re.compile(r"^(S\d+): sending “Hello” to Central\.$")
NUMBER = re.compile(r"^(S\d+): selected random number is (\d+)\.$")
GOT_HELLO = re.compile(r"^Central: received “Hello” from Server (S\d+)\.$")
HI = re.compile(r"^(C\d+): sending “Hi” to Central\.$")
GOT_HI = re.compile(r"^Central: received “Hi” from Client (C\d+)\.$")
FIND = re.compile(r"^(C\d+): find match of (\d+)$")
PROCESS = re.compile(r"^Central: process match request from (C\d+)$")
FORWARD = re.compile(r"^Central: forward match request of (\d+) from (C\d+) to (S\d+)$")
QUERY = re.compile(r"^(S\d+): received match request of (\d+) from (C\d+)$")
REPLY = re.compile(r"^(S\d+): sending (match|no-match) reply for (C\d+) to Central$")
GOT_REPLY = re.compile(r"^Central: received (match|no-match) reply from (S\d+) for (C\d+)$")
SEND_ANSWER = re.compile(r"^Central: send match reply to (C\d+)$")
NO_MATCH = re.compile(r"^(C\d+): No match has been found$")
MATCH = re.compile(r"^(C\d+): Match found on servers? (.+)$")


def parse_servers(text: str) -> list[str]:
    """'S1', 'S1 and S3', 'S1, S2 and S4' -> names; checks the English on the way."""
    if " and " not in text:
        return [text]
    head, last = text.rsplit(" and ", 1)
    return head.split(", ") + [last]


def transcript_part(lines: list[str]) -> list[str]:
    """The message lines: everything before the summary, which must follow them."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Summary: ")]
    assert len(starts) == 1, "one summary, after the transcript"
    return lines[: starts[0]]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )


def check_transcript(lines: list[str], n: int, rounds: int, early: bool) -> None:
    servers = [f"S{i}" for i in range(1, n + 1)]
    clients = [f"C{i}" for i in range(1, n + 1)]
    numbers: dict[str, int] = {}
    at: dict[tuple, int] = {}  # (event, node...) -> line index, for one-off events
    requests: dict[str, list[dict]] = defaultdict(list)  # client -> its requests in order
    counts: Counter = Counter()

    def once(key: tuple, i: int) -> None:
        assert key not in at, f"{key} printed twice"
        at[key] = i

    def current(client: str) -> dict:
        assert requests[client], f"line about {client} before it asked anything"
        return requests[client][-1]

    for i, line in enumerate(lines):
        if m := HELLO.match(line):
            once(("hello", m[1]), i)
        elif m := NUMBER.match(line):
            assert ("hello", m[1]) in at, "the number comes after the Hello line"
            numbers[m[1]] = int(m[2])
        elif m := GOT_HELLO.match(line):
            assert at[("hello", m[1])] < i
            once(("got-hello", m[1]), i)
        elif m := HI.match(line):
            once(("hi", m[1]), i)
        elif m := GOT_HI.match(line):
            assert at[("hi", m[1])] < i
            once(("got-hi", m[1]), i)
        elif m := FIND.match(line):
            client, number = m[1], int(m[2])
            if requests[client]:
                assert "answer" in current(client), f"{client} asked again before its answer"
            requests[client].append({"number": number, "find": i, "forwards": {}, "queries": {}, "replies": {}})
            counts["find"] += 1
        elif m := PROCESS.match(line):
            request = current(m[1])
            assert "process" not in request
            request["process"] = i
            counts["process"] += 1
        elif m := FORWARD.match(line):
            request = current(m[2])
            assert int(m[1]) == request["number"] and "process" in request
            request["forwards"][m[3]] = i
            counts["forward"] += 1
        elif m := QUERY.match(line):
            request = current(m[3])
            assert int(m[2]) == request["number"]
            assert request["forwards"][m[1]] < i, "a server received a request before it was forwarded"
            request["queries"][m[1]] = i
            counts["query"] += 1
        elif m := REPLY.match(line):
            request = current(m[3])
            assert request["queries"][m[1]] < i
            assert (m[2] == "match") == (numbers[m[1]] == request["number"]), line
            request["replies"][m[1]] = i
            counts["reply"] += 1
        elif m := GOT_REPLY.match(line):
            request = current(m[3])
            assert request["replies"][m[2]] < i
            counts["got-reply"] += 1
        elif m := SEND_ANSWER.match(line):
            request = current(m[1])
            assert "sent" not in request
            request["sent"] = i
            counts["send-answer"] += 1
        elif (m := NO_MATCH.match(line)) or (m := MATCH.match(line)):
            request = current(m[1])
            assert request.get("sent", len(lines)) < i, "answer received before it was sent"
            request["answer"] = [] if NO_MATCH.match(line) else parse_servers(m[2])
            counts["answer"] += 1

    # Registration: every node once, and every server registered before any client asks.
    for s in servers:
        assert ("hello", s) in at and ("got-hello", s) in at and s in numbers
    for c in clients:
        assert ("hi", c) in at and ("got-hi", c) in at
    last_registration = max(at[("got-hello", s)] for s in servers)
    first_find = min(r["find"] for c in clients for r in requests[c])
    assert last_registration < first_find

    # Requests: every client asks once a round, and every answer is exactly right.
    total = n * rounds
    for key in ("find", "process", "send-answer", "answer"):
        assert counts[key] == total, (key, counts[key])
    assert counts["forward"] == counts["query"] == total * n
    matching = 0
    for c in clients:
        assert len(requests[c]) == rounds
        for request in requests[c]:
            want = [s for s in servers if numbers[s] == request["number"]]
            assert request["answer"] == want, (c, request["number"], numbers)
            assert set(request["forwards"]) == set(request["queries"]) == set(servers)
            assert request["process"] < min(request["forwards"].values())
            matching += len(want)
    replies = total * n if early else matching
    assert counts["reply"] == counts["got-reply"] == replies


@pytest.mark.parametrize("n", [2, 3, 10])
@pytest.mark.parametrize("seed", [1, 7, 2024])
def test_every_answer_and_every_line(n: int, seed: int) -> None:
    result = run(str(n), "--rounds", str(ROUNDS), "--timeout", "0.2", "--seed", str(seed))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    check_transcript(transcript_part(lines), n, ROUNDS, early=False)


@pytest.mark.parametrize("n", [2, 5])
def test_early_mode_transcript(n: int) -> None:
    result = run(str(n), "--rounds", "2", "--timeout", "5", "--seed", "3", "--early")
    assert result.returncode == 0, result.stderr
    check_transcript(transcript_part(result.stdout.splitlines()), n, 2, early=True)


def test_a_seed_repeats_the_numbers_picks_and_answers() -> None:
    def decided(result: subprocess.CompletedProcess) -> list[str]:
        keep = (NUMBER, FIND, NO_MATCH, MATCH)
        return sorted(line for line in result.stdout.splitlines() if any(p.match(line) for p in keep))

    first = run("10", "--timeout", "0.3", "--seed", "7", "--rounds", "2")
    second = run("10", "--timeout", "0.3", "--seed", "7", "--rounds", "2")
    assert first.returncode == second.returncode == 0
    assert decided(first) == decided(second)
    third = run("10", "--timeout", "0.3", "--seed", "8", "--rounds", "2")
    assert decided(third) != decided(first)
