"""A report's events as a message-sequence chart in SVG, as networking textbooks draw them.

A lifeline per node (clients on the left, Central in the middle, servers on the right), one
arrow per message in time order, labelled with its content; each deadline that ended a
request is marked on Central's lifeline, late replies are drawn in red, answers that found a
match in green.

Layout: each lifeline keeps its own events in the order they happened, one row each, and a
message is received at least a little below where it was sent. So the picture keeps cause
before effect without spending a row of every lifeline on every event of the run; the exact
time of each message is in its tooltip.

Built from the recorded events (report.events), never from the printed text. Self-contained:
no scripts, fonts or anything else fetched.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape


if TYPE_CHECKING:
    from ._core import Report

CENTRAL = "Central"
# Beyond these, the picture shows a subset and says so.
MAX_NODES_PER_SIDE = 10
MAX_ROWS = 1500

COLUMN = 110  # px between lifelines
ROW = 20  # px between two events of one lifeline
SLOPE = 8  # px at least from a message's send to its receive
TOP = 92  # px above the first row: title, legend, lifeline heads
LEFT = 20  # px of margin

STYLE = """
text { font-family: Helvetica, Arial, sans-serif; font-size: 11px; fill: #222; }
.title { font-size: 15px; font-weight: bold; }
.subtitle { font-size: 11px; fill: #555; }
.head rect { fill: #eef2f7; stroke: #5b6b82; }
.head text { font-weight: bold; text-anchor: middle; }
.lifeline { stroke: #9aa7b8; stroke-dasharray: 4 4; }
.arrow line { stroke: #3b5b8c; stroke-width: 1.2; }
.arrow text { text-anchor: middle; font-size: 10px; }
.arrow.query line, .arrow.reply line { stroke: #7a8aa3; }
.arrow.answer.found line { stroke: #1f8a3b; stroke-width: 2.2; }
.arrow.answer.found text { fill: #1f8a3b; font-weight: bold; }
.arrow.answer.none line { stroke: #666; stroke-width: 1.6; }
.arrow.late line { stroke: #c62828; stroke-dasharray: 5 3; }
.arrow.late text { fill: #c62828; font-weight: bold; }
.arrow.error line { stroke: #c62828; }
.arrow polygon { fill: #3b5b8c; }
.arrow.query polygon, .arrow.reply polygon { fill: #7a8aa3; }
.arrow.answer.found polygon { fill: #1f8a3b; }
.arrow.answer.none polygon { fill: #666; }
.arrow.late polygon, .arrow.error polygon { fill: #c62828; }
.arrow.lost line { stroke-dasharray: 2 3; }
.note rect { fill: #fff8dc; stroke: #c9b458; }
.note.deadline rect { fill: #ffe9d6; stroke: #e07b00; }
.note.dropped rect { fill: #fde0e0; stroke: #c62828; }
.note text { font-size: 10px; text-anchor: middle; }
"""

MESSAGES = {"hello", "hi", "welcome", "find", "query", "reply", "answer", "error"}


def index_key(name: str) -> tuple[str, int]:
    """S2 before S10: the name without its trailing digits, then their number."""
    stem = name.rstrip("0123456789")
    digits = name[len(stem):]
    return stem, int(digits) if digits else 0


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def sequence_diagram(report: Report) -> str:
    events = report.events
    if not events:
        raise ValueError(
            "this report has no events to draw: a quiet run records none "
            "(run it without quiet=True to draw its sequence diagram)"
        )
    clients = sorted({e["from"] for e in events if e["kind"] == "hi.sent"}, key=index_key)
    servers = sorted({e["from"] for e in events if e["kind"] == "hello.sent"}, key=index_key)
    shown_clients, shown_servers = clients[:MAX_NODES_PER_SIDE], servers[:MAX_NODES_PER_SIDE]
    columns = shown_clients + [CENTRAL] + shown_servers
    x_of = {name: LEFT + 50 + i * COLUMN for i, name in enumerate(columns)}

    kept = [e for e in events if e["from"] in x_of and (e["to"] is None or e["to"] in x_of)]
    cut = len(kept) > MAX_ROWS
    kept = kept[:MAX_ROWS]
    notes = []
    if len(shown_clients) < len(clients) or len(shown_servers) < len(servers):
        notes.append(
            f"showing {len(shown_clients)} of {len(clients)} clients and "
            f"{len(shown_servers)} of {len(servers)} servers"
        )
    if cut:
        notes.append(f"showing the first {MAX_ROWS} events of those nodes, up to {kept[-1]['time']:.3f} s")

    # Pair every send with its receive: same kind, same ends, in order (TCP keeps order).
    receives: dict[tuple, deque] = defaultdict(deque)
    for e in kept:
        kind, phase = e["kind"].split(".")
        if phase in ("received", "late"):
            receives[(kind, e["from"], e["to"])].append(e)
    pairs: dict[int, dict | None] = {}
    for e in kept:
        kind, phase = e["kind"].split(".")
        if phase == "sent" and kind in MESSAGES:
            queue = receives[(kind, e["from"], e["to"])]
            pairs[id(e)] = queue.popleft() if queue else None
    sent_by_receive = {id(r): e for e in kept if (r := pairs.get(id(e))) is not None}

    rows: dict[int, int] = {}
    cursor: dict[str, int] = {}
    fan: tuple | None = None  # the request whose queries Central is sending out
    labelled: set[int] = set()
    for e in kept:
        node = e["to"] if e["kind"].split(".")[1] in ("received", "late") else e["from"]
        if e["kind"] == "query.sent" and fan == (e["fields"]["client"], e["fields"]["number"]):
            # One request's queries leave together: draw them as one fan from one row.
            rows[id(e)] = cursor[node]
            continue
        fan = (e["fields"]["client"], e["fields"]["number"]) if e["kind"] == "query.sent" else None
        labelled.add(id(e))
        y = cursor.get(node, TOP + 40 - ROW) + ROW
        sent = sent_by_receive.get(id(e))
        if sent is not None:
            y = max(y, rows[id(sent)] + SLOPE)
        rows[id(e)] = cursor[node] = y
    height = max(rows.values(), default=TOP + 40) + 50
    width = LEFT + 50 + (len(columns) - 1) * COLUMN + 90

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f"<style>{STYLE}</style>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    seed = f", seed {report.seed}" if report.seed is not None else ""
    mode = ", early" if report.early else ""
    out.append(
        f'<text class="title" x="12" y="22">matchtracker: n={report.n}, {plural(report.rounds, "round")}, '
        f"deadline {report.timeout:g} s{mode}{seed}</text>"
    )
    subtitle = "; ".join(notes) if notes else f"all {len(kept)} events"
    out.append(
        f'<text class="subtitle" x="12" y="40">{escape(subtitle)}. Time runs down each lifeline; '
        "hover over an arrow for its time.</text>"
    )
    out.extend(legend(12, 58))

    # Lifelines and their heads.
    for name, x in x_of.items():
        out.append(f'<line class="lifeline" x1="{x}" y1="{TOP + 22}" x2="{x}" y2="{height - 20}"/>')
        out.append(
            f'<g class="head"><rect x="{x - 36}" y="{TOP}" width="72" height="22" rx="4"/>'
            f'<text x="{x}" y="{TOP + 15}">{escape(name)}</text></g>'
        )

    for e in kept:
        y = rows[id(e)]
        kind, phase = e["kind"].split(".")
        if phase == "sent" and kind in MESSAGES:
            out.append(arrow(e, pairs[id(e)], x_of, y, rows, id(e) in labelled))
        elif e["kind"] == "number.selected":
            out.append(note(x_of[e["from"]], y, f"number {e['fields']['number']}", ""))
        elif e["kind"] == "deadline.reached":
            out.append(note(x_of[CENTRAL], y, f"deadline: {e['fields']['client']}", "deadline"))
        elif e["kind"] == "node.dropped":
            out.append(note(x_of[CENTRAL], y, f"dropped {e['fields']['node']}", "dropped"))
    out.append("</svg>")
    return "\n".join(out)


def label(e: dict) -> str:
    kind, f = e["kind"].split(".")[0], e["fields"]
    if kind == "hello":
        return "Hello"
    if kind == "hi":
        return "Hi"
    if kind == "welcome":
        return "Welcome"
    if kind == "find":
        return f"find {f['number']}"
    if kind == "query":
        return f"{f['client']}: {f['number']}?"
    if kind == "reply":
        return f"{'match' if f['matched'] else 'no match'} for {f['client']}"
    if kind == "answer":
        return ", ".join(f["servers"]) if f["servers"] else "no match"
    if kind == "error":
        return f"error {f['code']}"
    return kind


def arrow(sent: dict, received: dict | None, x_of: dict, y: int, rows: dict, labelled: bool) -> str:
    kind = sent["kind"].split(".")[0]
    classes = ["arrow", kind]
    x1, x2 = x_of[sent["from"]], x_of.get(sent["to"], x_of[CENTRAL])
    y2 = rows[id(received)] if received is not None else y
    text = label(sent)
    if kind == "answer":
        classes.append("found" if sent["fields"]["servers"] else "none")
    if received is None:
        classes.append("lost")
    elif received["kind"] == "reply.late":
        classes.append("late")
        text += " (late, dropped)"
    tip = 6 if x2 > x1 else -6
    # The label sits above the arrow's middle; a fan of queries is labelled once, near Central.
    mx, my = (x1 + x2) / 2, (y + y2) / 2 - 3
    if kind == "query":
        mx, my = x1 + (COLUMN / 2 if x2 > x1 else -COLUMN / 2), y - 3
    return (
        f'<g class="{" ".join(classes)}" data-kind="{kind}">'
        f"<title>{escape(sent['from'])} → {escape(sent['to'] or '')} at {sent['time']:.6f} s: {escape(text)}</title>"
        f'<line x1="{x1}" y1="{y}" x2="{x2 - tip}" y2="{y2}"/>'
        f'<polygon points="{x2},{y2} {x2 - tip},{y2 - 3.5} {x2 - tip},{y2 + 3.5}"/>'
        + (f'<text x="{mx}" y="{my}">{escape(text)}</text>' if labelled or "late" in classes else "")
        + "</g>"
    )


def note(x: int, y: int, text: str, kind: str) -> str:
    w = 8 + 6 * len(text)
    return (
        f'<g class="note {kind}"><rect x="{x - w / 2}" y="{y - 8}" width="{w}" height="15" rx="3"/>'
        f'<text x="{x}" y="{y + 3}">{escape(text)}</text></g>'
    )


def legend(x: int, y: int) -> list[str]:
    items = [
        ("#3b5b8c", "", "message"),
        ("#1f8a3b", "", "answer with matches"),
        ("#666", "", "answer: no match"),
        ("#c62828", "5 3", "late reply (dropped)"),
    ]
    out = []
    for i, (color, dash, text) in enumerate(items):
        lx = x + i * 170
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 28}" y2="{y}" stroke="{color}" stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{lx + 34}" y="{y + 4}">{escape(text)}</text>')
    dx = x + len(items) * 170
    out.append(note(dx + 40, y, "deadline", "deadline"))
    return out


def html(svg: str, title: str) -> str:
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title></head>\n<body style=\"margin:0\">\n{svg}\n</body></html>\n"
    )
