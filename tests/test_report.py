"""Seeing a run: events, JSON lines, the summary, the sequence diagram, progress."""

from __future__ import annotations

import json
import shutil
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from matchtracker import run_simulation
from matchtracker._diagram import sequence_diagram

PROJECT = Path(__file__).resolve().parent.parent / "project.py"
SVG = "{http://www.w3.org/2000/svg}"


def items(svg: str) -> list[ET.Element]:
    """Every drawn message, fan, line of replies and note."""
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{SVG}g") if g.get("data-nodes") is not None]


def of_kind(drawn: list[ET.Element], kind: str) -> list[ET.Element]:
    return [g for g in drawn if kind in g.get("class", "").split()]


def count(events: list[dict], *kinds: str) -> int:
    return sum(1 for e in events if e["kind"] in kinds)


@pytest.mark.parametrize("n, early", [(2, False), (4, True)])
def test_every_message_is_drawn(n: int, early: bool) -> None:
    report = run_simulation(n, 2, timeout=0.2, seed=3, early=early, quiet=False)
    drawn = items(report.sequence_diagram())
    events = report.events
    assert len(of_kind(drawn, "register")) == count(events, "hello.sent", "hi.sent")
    assert len(of_kind(drawn, "welcomed")) == count(events, "welcome.sent")
    assert len(of_kind(drawn, "find")) == count(events, "find.sent")
    assert len(of_kind(drawn, "answer")) == count(events, "answer.sent")
    assert len(of_kind(drawn, "deadline")) == count(events, "deadline.reached")
    # One fan per request, with an arrowhead at each server queried; one line of replies per
    # request that got any, with a dot for each reply, filled for a match.
    fans = of_kind(drawn, "fan")
    assert len(fans) == len(report.requests)
    assert sum(len(g.findall(f"{SVG}polygon")) for g in fans) == count(events, "query.sent")
    replies = of_kind(drawn, "replies")
    dots = [c for g in replies for c in g.findall(f"{SVG}circle")]
    assert len(dots) == count(events, "reply.received")
    matched = sum(1 for e in events if e["kind"] == "reply.received" and e["fields"]["matched"])
    assert sum(1 for c in dots if c.get("class") == "match") == matched
    assert len(of_kind(drawn, "found")) == sum(1 for r in report.requests if r.servers)
    # Each request's items carry its key, and a request's answer names what it found.
    for record in report.requests:
        key = f"{record.client}.{record.round}"
        story = [g for g in drawn if g.get("data-req") == key]
        kinds = {k for g in story for k in g.get("class").split()}
        assert {"find", "fan", "answer"} <= kinds, (key, kinds)
        answer = of_kind(story, "answer")[0]
        assert answer.find(f"{SVG}text").text == (", ".join(record.servers) or "no match")


def test_a_large_run_shows_a_subset_and_says_so() -> None:
    report = run_simulation(12, 1, timeout=0.2, seed=1)
    svg = report.sequence_diagram()
    assert "showing 10 of 12 clients and 10 of 12 servers" in svg
    drawn = items(svg)
    assert len(of_kind(drawn, "find")) == 10
    shown = {f"C{i}" for i in range(1, 11)} | {f"S{i}" for i in range(1, 11)}
    assert all(set(g.get("data-nodes").split()) <= shown for g in drawn)


def test_late_replies_and_deadlines_are_marked() -> None:
    def event(time, frm, to, kind, **fields):
        return {"time": time, "from": frm, "to": to, "kind": kind, "fields": fields}

    events = [
        event(0.0, "S1", "Central", "hello.sent"),
        event(0.1, "S1", "Central", "hello.received"),
        event(0.2, "C1", "Central", "hi.sent"),
        event(0.3, "C1", "Central", "hi.received"),
        event(0.35, "C1", "Central", "find.sent", number=4),
        event(0.4, "Central", "S1", "query.sent", client="C1", number=4),
        event(0.5, "Central", "S1", "query.received", client="C1", number=4),
        event(0.6, "Central", None, "deadline.reached", client="C1"),
        event(0.7, "Central", "C1", "answer.sent", servers=[]),
        event(0.8, "S1", "Central", "reply.sent", client="C1", matched=True),
        event(0.9, "S1", "Central", "reply.late", id=1),
        event(1.0, "Central", "C1", "answer.received", servers=[]),
    ]
    fake = SimpleNamespace(events=events, n=1, rounds=1, timeout=0.5, early=False, seed=None)
    drawn = items(sequence_diagram(fake))
    late = of_kind(drawn, "late")
    assert len(late) == 1 and late[0].find(f"{SVG}text").text == "late reply from S1, dropped"
    deadline = of_kind(drawn, "deadline")
    assert len(deadline) == 1 and deadline[0].find(f"{SVG}text").text == "deadline: C1"
    assert deadline[0].get("data-req") == "C1.1"


def text_boxes(svg: str) -> tuple[float, list[tuple[float, float, float, float, str]]]:
    """The picture's width, and each text's box from its position, font size and length: a
    character at most 0.67 em wide (Helvetica's widest bold capitals average less), from a
    font-size above the baseline to a quarter below it."""
    root = ET.fromstring(svg)
    boxes = []
    for t in root.iter(f"{SVG}text"):
        words, size = "".join(t.itertext()), float(t.get("font-size"))
        x, y, width = float(t.get("x")), float(t.get("y")), len(words) * size * 0.67
        left = {"middle": x - width / 2, "end": x - width}.get(t.get("text-anchor"), x)
        boxes.append((left, y - size, left + width, y + size / 4, words))
    return float(root.get("width")), boxes


@pytest.mark.parametrize("n", [3, 10])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_text_lies_over_other_text(n: int, seed: int) -> None:
    report = run_simulation(n, 3, timeout=0.1, seed=seed, early=seed == 2, quiet=False)
    width, boxes = text_boxes(report.sequence_diagram())
    assert len(boxes) > 20 * n
    for left, _, right, _, words in boxes:
        assert 0 <= left and right <= width, f"{words!r} runs off the picture"
    boxes.sort(key=lambda b: b[1])
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if b[1] >= a[3]:
                break
            assert not (a[0] < b[2] and b[0] < a[2]), f"{a[4]!r} and {b[4]!r} overlap"


def test_the_picture_stays_a_sensible_size_at_n_10() -> None:
    report = run_simulation(10, 5, timeout=0.2, seed=4, quiet=False)
    root = ET.fromstring(report.sequence_diagram())
    width, height = float(root.get("width")), float(root.get("height"))
    assert width <= 2000 and height <= 3600, (width, height)
    # The lifelines' heads come back down the page.
    heads = [g for g in root.iter(f"{SVG}g") if g.get("class") == "head" and g.get("data-node") == "Central"]
    assert len(heads) >= 1 + height // 1000


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
    svg = text[text.index('<svg id="chart"') if suffix == ".html" else 0 :]
    svg = svg[: svg.index("</svg>") + len("</svg>")]
    assert len(items(svg)) > 0
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


class Elements(HTMLParser):
    """Each element's attributes, from the page as the browser left it."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.found.append({k: v or "" for k, v in attrs})

    @classmethod
    def of(cls, html: str) -> list[dict[str, str]]:
        parser = cls()
        parser.feed(html)
        return parser.found


def page_after_script(path: Path, fragment: str) -> list[dict[str, str]]:
    """The page's elements once headless Chromium has loaded it and run its script."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Chromium (Debian's chromium package) to run the page's script")
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"{path.as_uri()}#{fragment}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    parser = Elements()
    parser.feed(done.stdout)
    assert parser.found, done.stderr
    return parser.found


def test_the_page_highlights_exactly_one_request_or_one_node(tmp_path: Path) -> None:
    from matchtracker._diagram import page

    report = run_simulation(4, 3, timeout=0.1, seed=6, quiet=False)
    path = tmp_path / "run.html"
    path.write_text(page(report), encoding="utf-8")
    assert "http" not in path.read_text().replace("http://www.w3.org/2000/svg", ""), "the page fetches nothing"
    for fragment, belongs in [
        ("req=C2.2", lambda e: e.get("data-req") == "C2.2"),
        ("node=S3", lambda e: "S3" in e.get("data-nodes", "").split()),
    ]:
        elements = [e for e in page_after_script(path, fragment) if "data-nodes" in e]
        lit = [e for e in elements if "hl" in e.get("class", "").split()]
        assert lit, fragment
        assert lit == [e for e in elements if belongs(e)], fragment


def test_a_shared_link_opens_scrolled_to_its_request_under_the_header(tmp_path: Path) -> None:
    """`run.html#req=C3.2` in a 1400x900 window: the header stays at the top of the window
    and the request's first arrow is in view below it. Measured in the page itself, after its
    script ran (a headless `--screenshot` of a page scrolled at load paints the viewport
    blank with the header at the bottom, which no browser window shows)."""
    from matchtracker._diagram import page

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Chromium (Debian's chromium package) to run the page's script")
    report = run_simulation(10, 5, timeout=0.1, seed=3, early=True)
    probe = (
        "<script>const h = document.querySelector('header').getBoundingClientRect();"
        "const f = document.querySelector('#chart .hl').getBoundingClientRect();"
        "document.body.dataset.probe = [scrollY, innerHeight, h.top, h.bottom, f.top, f.bottom].join(' ');"
        "</script></body>"
    )
    path = tmp_path / "run.html"
    path.write_text(page(report).replace("</body>", probe), encoding="utf-8")
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900", "--dump-dom", f"{path.as_uri()}#req=C3.2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    (body,) = [e for e in Elements.of(done.stdout) if "data-probe" in e]
    scroll_y, height, header_top, header_bottom, top, bottom = map(float, body["data-probe"].split())
    assert scroll_y > 0, "scrolled down to the request"
    assert header_top == 0, "the header is at the top of the window"
    assert header_bottom <= top and bottom <= height, "the request's first arrow is in view, below the header"
