"""Seeing a run: events, JSON lines, the summary, the sequence diagram, progress."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from matchtracker import run_simulation
from matchtracker._diagram import sequence_diagram

PROJECT = Path(__file__).resolve().parent.parent / "project.py"
SVG = "{http://www.w3.org/2000/svg}"


def arrows(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{SVG}g") if "arrow" in g.get("class", "").split()]


def sent_messages(events: list[dict]) -> list[dict]:
    return [e for e in events if e["kind"].endswith(".sent")]


@pytest.mark.parametrize("n, early", [(2, False), (4, True)])
def test_the_diagram_has_one_arrow_per_message(n: int, early: bool) -> None:
    report = run_simulation(n, 2, timeout=0.2, seed=3, early=early, quiet=False)
    svg = report.sequence_diagram()
    drawn = arrows(svg)
    assert len(drawn) == len(sent_messages(report.events))
    kinds = sorted(g.get("data-kind") for g in drawn)
    assert kinds == sorted(e["kind"].split(".")[0] for e in sent_messages(report.events))
    found = [g for g in drawn if "found" in g.get("class").split()]
    assert len(found) == sum(1 for r in report.requests if r.servers)


def test_a_large_run_shows_a_subset_and_says_so() -> None:
    report = run_simulation(12, 1, timeout=0.2, seed=1)
    svg = report.sequence_diagram()
    assert "showing 10 of 12 clients and 10 of 12 servers" in svg
    shown = {f"C{i}" for i in range(1, 11)} | {f"S{i}" for i in range(1, 11)} | {"Central"}
    expected = [e for e in sent_messages(report.events) if e["from"] in shown and e["to"] in shown]
    assert len(arrows(svg)) == len(expected)


def test_late_replies_and_deadlines_are_marked() -> None:
    def event(time, frm, to, kind, **fields):
        return {"time": time, "from": frm, "to": to, "kind": kind, "fields": fields}

    events = [
        event(0.0, "S1", "Central", "hello.sent"),
        event(0.1, "S1", "Central", "hello.received"),
        event(0.2, "C1", "Central", "hi.sent"),
        event(0.3, "C1", "Central", "hi.received"),
        event(0.4, "Central", "S1", "query.sent", client="C1", number=4),
        event(0.5, "Central", "S1", "query.received", client="C1", number=4),
        event(0.6, "Central", None, "deadline.reached", client="C1"),
        event(0.7, "Central", "C1", "answer.sent", servers=[]),
        event(0.8, "S1", "Central", "reply.sent", client="C1", matched=True),
        event(0.9, "S1", "Central", "reply.late", id=1),
        event(1.0, "Central", "C1", "answer.received", servers=[]),
    ]
    fake = SimpleNamespace(events=events, n=1, rounds=1, timeout=0.5, early=False, seed=None)
    svg = sequence_diagram(fake)
    drawn = arrows(svg)
    assert len(drawn) == 5  # hello, hi, query, answer, reply
    late = [g for g in drawn if "late" in g.get("class").split()]
    assert len(late) == 1 and "late, dropped" in "".join(late[0].itertext())
    assert "deadline: C1" in svg


def test_json_lines_are_the_report_events(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_simulation(3, 1, timeout=0.2, seed=9, json=True)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == len(report.events)
    for got, want in zip(printed, report.events):
        assert got["time"] == pytest.approx(want["time"], abs=1e-6)
        assert {k: got[k] for k in ("from", "to", "kind", "fields")} == {
            k: want[k] for k in ("from", "to", "kind", "fields")
        }
    assert json.loads(report.to_json()) == json.loads(json.dumps(report.to_dict()))


def test_every_message_line_has_its_event() -> None:
    report = run_simulation(3, 2, timeout=0.2, seed=4)
    assert len(report.transcript) == len(report.events)
    kinds = {e["kind"] for e in report.events}
    assert {"query.sent", "query.received", "answer.sent", "answer.received", "deadline.reached"} <= kinds


def test_the_summary_totals_are_the_reports() -> None:
    report = run_simulation(4, 3, timeout=0.2, seed=12, quiet=True)
    text = report.summary()
    first = text.splitlines()[0]
    m = re.match(
        r"Summary: n=4, 3 rounds, (\d+) requests: (\d+) matched, (\d+) no match, (\d+) late repl(?:y|ies); ([\d.]+) s",
        first,
    )
    assert m, first
    matched = sum(1 for r in report.requests if r.servers)
    assert int(m[1]) == len(report.requests) == 12
    assert (int(m[2]), int(m[3]), int(m[4])) == (matched, 12 - matched, report.late_replies)
    for name, number in report.numbers.items():
        hits = sum(1 for r in report.requests if name in r.servers)
        assert re.search(rf"{name} +number +{number}, matched {hits} request", text)


def test_numbers_and_requests_come_in_index_order() -> None:
    report = run_simulation(12, 2, timeout=0.05, seed=4, quiet=True)
    assert list(report.numbers) == [f"S{i}" for i in range(1, 13)]
    assert [r.client for r in report.requests] == [f"C{i}" for i in range(1, 13)] * 2
    assert report.requests is report.requests, "made once"
    data = report.to_dict()
    assert list(data["numbers"]) == list(report.numbers)
    # Requests with the same answer share one list in the dict, and agree with the records.
    assert [d["servers"] for d in data["requests"]] == [r.servers for r in report.requests]
    by_answer = {}
    for d in data["requests"]:
        by_answer.setdefault(tuple(d["servers"]), set()).add(id(d["servers"]))
    assert all(len(ids) == 1 for ids in by_answer.values())
    totals = report.totals()
    assert totals["requests"] == 24 and totals["incomplete"] == 0


def test_the_phases_of_a_run_fit_its_duration() -> None:
    report = run_simulation(4, 3, timeout=0.1, seed=3, quiet=True)
    assert report.startup > 0 and report.closing > 0
    # Only matches reply, so each of the 3 rounds between them lasts at least its deadline.
    assert report.startup + 3 * 0.1 + report.closing <= report.duration
    assert report.to_dict()["startup"] == report.startup
    assert report.to_dict()["closing"] == report.closing


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("suffix", [".svg", ".html"])
def test_the_command_line_writes_the_diagram(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"run{suffix}"
    result = run_cli("3", "--rounds", "1", "--timeout", "0.2", "--seed", "5", "--diagram", str(target))
    assert result.returncode == 0, result.stderr
    text = target.read_text(encoding="utf-8")
    svg = text[text.index("<svg") : text.index("</svg>") + len("</svg>")]
    assert len(arrows(svg)) > 0
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", ""), "the picture fetches nothing"


def test_the_command_line_refuses_a_bad_diagram_name() -> None:
    result = run_cli("3", "--diagram", "run.png")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


def test_json_from_the_command_line_is_json_only() -> None:
    result = run_cli("2", "--rounds", "1", "--timeout", "0.2", "--json")
    assert result.returncode == 0
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events and all(set(e) == {"time", "from", "to", "kind", "fields"} for e in events)


def test_progress_goes_to_stderr_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    run_simulation(2, 3, timeout=0.5, seed=1, quiet=True, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "round " in captured.err and "requests answered" in captured.err
    assert captured.err.endswith("\r\x1b[K"), "the progress line is cleared at the end"
    run_simulation(2, 1, timeout=0.2, quiet=True, progress=False)
    assert capsys.readouterr().err == ""


def test_a_quiet_report_has_no_diagram_and_says_why() -> None:
    report = run_simulation(2, 1, timeout=0.05, quiet=True)
    with pytest.raises(ValueError, match="a quiet run records none"):
        report.sequence_diagram()
