"""A report's events as a message-sequence chart: SVG for a page or a print, and an
interactive HTML page.

Lifelines: clients on the left, Central in the middle, servers on the right (each server's
head shows its number). Time runs down a time axis: one row per moment something is sent,
every arrow horizontal, so no arrow crosses another; a message to the left of Central and
one to the right may share a row, and a quiet stretch (the wait for a deadline) is cut out
and marked with how long it lasted. The setup and each round are bands.

Each request reads as one story: `find` (client → Central), its queries as one fan from
Central to every server, the replies gathered on one line back to Central (a filled dot for
a match, a hollow one for "no match"), the deadline if it ended the request, and the answer
(green when it names servers). Late replies are red. Every element carries the exact times
in its tooltip and the request and nodes it belongs to, which the HTML page uses to
highlight one request or one node and fade the rest.

Labels are laid out so that no two overlap: each row holds at most one label on each side of
Central, kept inside its side; the width of a label is reckoned from its length and font
size (`text_width`), which is also how the tests check the result.

Built from the recorded events (report.events), never from the printed text. Self-contained:
no scripts, fonts or anything else fetched.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

if TYPE_CHECKING:
    from ._core import Report

CENTRAL = "Central"
# Beyond these, the picture shows a subset and says so.
MAX_NODES_PER_SIDE = 10
MAX_ITEMS = 3000

COLUMN = 84  # px between lifelines, up to six nodes a side
NARROW = 70  # px between lifelines, for more
ROW = 18  # px between rows
GUTTER = 132  # px left of the first lifeline: round names and the time axis
HEAD_EVERY = 45  # rows between repeated lifeline heads in the SVG
FONT = 10  # px, labels
CHAR = 0.62  # a character's width in em, generously (Helvetica averages about 0.55)


def text_width(text: str, size: float, bold: bool = False) -> float:
    """How wide `text` is drawn at `size` px: the layout reserves this, and the tests check it."""
    return len(text) * size * (CHAR + (0.05 if bold else 0.0))


STYLE = """
text { font-family: Helvetica, Arial, sans-serif; fill: #222; }
.title { font-weight: bold; }
.subtitle, .axis { fill: #555; }
.band { fill: #f4f6fa; }
.band.odd { fill: #ffffff; }
.bandname { font-weight: bold; fill: #5b6b82; }
.head rect { fill: #eef2f7; stroke: #5b6b82; }
.head text { font-weight: bold; }
.lifeline { stroke: #b4bfcc; stroke-dasharray: 4 4; }
.gap line { stroke: #b4bfcc; stroke-dasharray: 1 5; stroke-width: 3; }
.item line { stroke: #3b5b8c; stroke-width: 1.2; }
.item polygon { fill: #3b5b8c; }
.fan line, .replies line { stroke: #7a8aa3; }
.fan polygon, .replies polygon { fill: #7a8aa3; }
.replies circle { stroke: #7a8aa3; fill: white; stroke-width: 1.2; }
.replies circle.match { fill: #1f8a3b; stroke: #1f8a3b; }
.answer.found line { stroke: #1f8a3b; stroke-width: 2.2; }
.answer.found polygon { fill: #1f8a3b; }
.answer.found text { fill: #1f8a3b; font-weight: bold; }
.answer.none line { stroke: #666; stroke-width: 1.6; }
.answer.none polygon { fill: #666; }
.late line, .error line { stroke: #c62828; stroke-dasharray: 5 3; }
.late polygon, .error polygon { fill: #c62828; }
.late text, .error text { fill: #c62828; font-weight: bold; }
.lost line { stroke-dasharray: 2 3; }
.note rect { fill: #fff8dc; stroke: #c9b458; }
.note.deadline rect { fill: #ffe9d6; stroke: #e07b00; }
.note.dropped rect { fill: #fde0e0; stroke: #c62828; }
"""

MESSAGES = {"hello", "hi", "welcome", "find", "query", "reply", "answer", "error"}


def index_key(name: str) -> tuple[str, int]:
    """S2 before S10: the name without its trailing digits, then their number."""
    stem = name.rstrip("0123456789")
    digits = name[len(stem):]
    return stem, int(digits) if digits else 0


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


@dataclass
class Item:
    """One thing drawn on one row: an arrow, a fan, a line of replies, or a note."""

    time: float
    kind: str  # hello hi welcome find fan replies late answer deadline dropped error
    side: str  # "left" or "right" of Central
    node: str  # the node at the far end from Central (a fan's or replies' farthest server)
    outward: bool  # drawn from Central towards `node`
    label: str
    short: str  # the label when the full one does not fit its side
    tip: list[str]
    round: int = 0  # 0: setup
    request: str | None = None  # "C3.2": C3's second request
    nodes: list[str] = field(default_factory=list)  # every node it involves
    marks: list[tuple[str, str]] = field(default_factory=list)  # (server, "match" | "miss" | "query")
    classes: list[str] = field(default_factory=list)
    row: int = 0


@dataclass
class Chart:
    """What the SVG and the HTML page draw: columns, items on rows, bands, gaps."""

    title: str
    subtitle: str
    columns: list[str]
    heads: dict[str, str]
    items: list[Item]
    rows: int
    row_time: dict[int, float]
    gaps: dict[int, float]  # row → seconds cut out just above it
    bands: list[tuple[int, int, str]]  # first row, last row, name
    head_rows: list[int] = field(default_factory=list)  # rows kept free for repeated heads

    @property
    def column(self) -> int:
        return COLUMN if len(self.columns) <= 13 else NARROW

    def x(self, name: str) -> float:
        return GUTTER + 40 + self.columns.index(name) * self.column

    @property
    def width(self) -> int:
        lifelines = GUTTER + 40 + (len(self.columns) - 1) * self.column + 60
        return int(max(lifelines, 24 + text_width(self.title, 15, bold=True), 24 + text_width(self.subtitle + SUBTITLE, 11, bold=True)))


def build(report: Report) -> Chart:
    """The chart of `report`: its items in time order, each on a row."""
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
    numbers = {e["from"]: e["fields"]["number"] for e in events if e["kind"] == "number.selected"}
    heads = {name: name + (f" · {numbers[name]}" if name in numbers else "") for name in columns}
    items = collect(events, set(columns), set(shown_servers))
    notes = []
    if len(shown_clients) < len(clients) or len(shown_servers) < len(servers):
        notes.append(
            f"showing {len(shown_clients)} of {len(clients)} clients and "
            f"{len(shown_servers)} of {len(servers)} servers"
        )
    if len(items) > MAX_ITEMS:
        items = items[:MAX_ITEMS]
        notes.append(f"showing the first {MAX_ITEMS} messages, up to {items[-1].time:.3f} s")
    seed = f", seed {report.seed}" if report.seed is not None else ""
    mode = ", early" if report.early else ""
    title = f"matchtracker: n={report.n}, {plural(report.rounds, 'round')}, deadline {report.timeout:g} s{mode}{seed}"
    subtitle = "; ".join(notes) or f"{plural(len(items), 'message')} and notes"
    chart = Chart(title, subtitle, columns, heads, items, 0, {}, {}, [])
    place(chart, gap=max(0.05, report.timeout / 4))
    return chart


def collect(events: list[dict], shown: set[str], servers: set[str]) -> list[Item]:
    """The events as items: each message once, a request's queries and replies gathered."""
    received: dict[tuple, deque] = defaultdict(deque)
    for e in events:
        kind, phase = e["kind"].split(".")
        if phase == "received":
            received[(kind, e["from"], e["to"])].append(e)

    def arrival(e: dict) -> str:
        queue = received[(e["kind"].split(".")[0], e["from"], e["to"])]
        return f", received at {queue.popleft()['time']:.6f} s" if queue else ", never received"

    def side(node: str) -> str:
        return "right" if node in servers else "left"

    items: list[Item] = []
    asked: dict[str, int] = defaultdict(int)  # requests each client has made
    fans: dict[str, Item] = {}
    greetings: dict[str, Item] = {}
    replies: dict[str, Item] = {}
    for e in events:
        kind, phase = e["kind"].split(".")
        frm, to, f, t = e["from"], e["to"], e["fields"], e["time"]
        at = f"{t:.6f} s"
        if kind in MESSAGES and phase == "sent" and (frm not in shown or (to or CENTRAL) not in shown):
            continue
        request = None
        client = f.get("client") or (frm if kind == "find" else to if kind == "answer" else None)
        if client is not None and asked[client]:
            request = f"{client}.{asked[client]}"
        round_ = asked[client] if client is not None else 0
        if e["kind"] in ("hello.sent", "hi.sent"):
            # A greeting and its welcome are one item: a line with a head at each end.
            word = "Hello" if kind == "hello" else "Hi"
            greeting = Item(t, "register", side(frm), frm, False, word, word, [f"{frm} → Central: {word} at {at}{arrival(e)}"], nodes=[frm])
            greetings[frm] = greeting
            items.append(greeting)
        elif e["kind"] == "welcome.sent":
            greeting = greetings.pop(to, None)
            tip = f"Central → {to}: Welcome at {at}{arrival(e)}"
            if greeting is None:
                items.append(Item(t, "register", side(to), to, True, "Welcome", "Welcome", [tip], nodes=[to]))
            else:
                greeting.label = greeting.short = f"{greeting.label} / Welcome"
                greeting.tip.append(tip)
                greeting.classes.append("welcomed")
        elif e["kind"] == "find.sent":
            asked[frm] += 1
            request, round_ = f"{frm}.{asked[frm]}", asked[frm]
            text = f"find {f['number']}"
            tip = f"{frm} → Central: find {f['number']} (request {asked[frm]}) at {at}{arrival(e)}"
            items.append(Item(t, "find", "left", frm, False, text, text, [tip], round_, request, [frm]))
        elif e["kind"] == "query.sent" and request is not None:
            fan = fans.get(request)
            if fan is None:
                text = f"{client} asks: who holds {f['number']}?"
                fan = Item(t, "fan", "right", to, True, text, f"{f['number']}?", [], round_, request, [client])
                fans[request] = fan
                items.append(fan)
            fan.marks.append((to, "query"))
            fan.nodes.append(to)
            fan.tip.append(f"Central → {to}: query {f['number']} for {client} at {at}{arrival(e)}")
        elif e["kind"] == "reply.received" and request is not None and frm in shown:
            gathered = replies.get(request)
            if gathered is None:
                gathered = Item(t, "replies", "right", frm, False, "", "", [], round_, request, [client])
                replies[request] = gathered
                items.append(gathered)
            gathered.time = t
            gathered.marks.append((frm, "match" if f["matched"] else "miss"))
            gathered.nodes.append(frm)
            gathered.tip.append(f"{frm} → Central: {'match' if f['matched'] else 'no match'} for {client}, received at {at}")
        elif e["kind"] == "reply.late" and frm in shown:
            text = f"late reply from {frm}, dropped"
            items.append(Item(t, "late", "right", frm, False, text, "late", [f"{frm} → Central: {text} at {at}"], nodes=[frm], classes=["late"]))
        elif e["kind"] == "deadline.reached" and request is not None:
            text = f"deadline: {client}"
            items.append(Item(t, "deadline", "right", CENTRAL, True, text, "deadline", [f"deadline of {client}'s request at {at}"], round_, request, [client]))
        elif e["kind"] == "answer.sent":
            names = f["servers"]
            text = ", ".join(names) if names else "no match"
            short = plural(len(names), "server") if names else "no match"
            tip = f"Central → {to}: {text} at {at}{arrival(e)}"
            found = ["found"] if names else ["none"]
            items.append(Item(t, "answer", "left", to, True, text, short, [tip], round_, request, [to, *(n for n in names if n in shown)], classes=found))
        elif e["kind"] == "error.sent" and to in shown:
            text = f"error {f['code']}"
            items.append(Item(t, "error", side(to), to, True, text, "error", [f"Central → {to}: {text} at {at}"], nodes=[to], classes=["error"]))
        elif e["kind"] == "node.dropped" and f["node"] in shown:
            text = f"dropped {f['node']}"
            items.append(Item(t, "dropped", side(f["node"]), CENTRAL, True, text, "dropped", [f"{text} at {at}: {f['reason']}"], nodes=[f["node"]]))
    for gathered in replies.values():
        matched = sorted((s for s, how in gathered.marks if how == "match"), key=index_key)
        farthest = max((s for s, _ in gathered.marks), key=index_key)
        gathered.node = farthest
        count = f"{len(gathered.marks)} " + ("reply" if len(gathered.marks) == 1 else "replies")
        gathered.label = f"{count}, match: {', '.join(matched)}" if matched else f"{count}, no match"
        gathered.short = count
    for fan in fans.values():
        fan.node = max((s for s, _ in fan.marks), key=index_key)
    return sorted(items, key=lambda item: item.time)


def place(chart: Chart, gap: float) -> None:
    """Gives each item its row. Rows follow time on each side of Central; an item joins a row
    already begun on the other side if that row began at most `gap / 20` before it (so each
    row's time holds to within that), and always comes below the last item of its request
    (an answer may share the row of the deadline that ended it). A stretch longer than `gap`
    with nothing sent is cut out and marked."""
    near = gap / 20
    last = {"left": 0, "right": 0}
    last_of_request: dict[str, tuple[int, str]] = {}
    bands: dict[int, list[int]] = {}
    row, previous = 0, None

    def new_row() -> int:
        nonlocal row
        row += 1
        if row % HEAD_EVERY == 0:
            chart.head_rows.append(row)  # repeated heads take this row and the next
            row += 2
        return row

    for item in chart.items:
        if previous is not None and item.time - previous > gap:
            marker = new_row()  # the gap marker takes a row of its own
            chart.gaps[marker] = item.time - previous
            last = {"left": marker, "right": marker}
        low = last[item.side] + 1
        if item.request in last_of_request:
            below, kind = last_of_request[item.request]
            low = max(low, below if item.kind == "answer" and kind == "deadline" else below + 1)
        joins = [r for r in range(low, row + 1) if r in chart.row_time and item.time - chart.row_time[r] <= near]
        if joins:
            item.row = joins[0]
        else:
            item.row = new_row()
            chart.row_time[item.row] = item.time
        last[item.side] = item.row
        previous = item.time if previous is None else max(previous, item.time)
        if item.request:
            last_of_request[item.request] = (item.row, item.kind)
        span = bands.setdefault(item.round, [item.row, item.row])
        span[0], span[1] = min(span[0], item.row), max(span[1], item.row)
    chart.rows = row
    chart.bands = [(a, b, f"round {r}" if r else "setup") for r, (a, b) in sorted(bands.items())]


# Drawing. Rows start below the header; y(row) is a row's line.


HEADER = 108  # px: title, subtitle, legend, the first lifeline heads
SUBTITLE = ". Time runs down; each row's time is at its left; exact times in each item's tooltip."


def y_of(row: int) -> float:
    return HEADER + 10 + row * ROW


def label_at(chart: Chart, item: Item, x1: float, x2: float, size: float, bold: bool) -> tuple[str, float]:
    """The label and its centre: over the middle of the line, kept inside its side of Central
    (the full label, or the short one if the full one does not fit)."""
    central = chart.x(CENTRAL)
    low, high = (GUTTER + 4, central - 6) if item.side == "left" else (central + 6, chart.width - 4)
    for text in (item.label, item.short):
        w = text_width(text, size, bold)
        if w <= high - low:
            middle = min(max((x1 + x2) / 2, low + w / 2), high - w / 2)
            return text, middle
    return "", 0.0


def text(x: float, y: float, body: str, size: float, cls: str = "", anchor: str = "middle") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}" text-anchor="{anchor}"{klass}>{escape(body)}</text>'


def arrowhead(x: float, y: float, leftward: bool) -> str:
    d = -6 if leftward else 6
    return f'<polygon points="{x:.1f},{y:.1f} {x - d:.1f},{y - 3.5:.1f} {x - d:.1f},{y + 3.5:.1f}"/>'


def draw_item(chart: Chart, item: Item) -> str:
    y = y_of(item.row)
    central = chart.x(CENTRAL)
    far = chart.x(item.node)
    classes = ["item", item.kind, *item.classes]
    parts = [f"<title>{escape(chr(10).join(item.tip))}</title>"]
    bold = item.kind == "answer" and "found" in item.classes or item.kind in ("late", "error")
    if item.kind in ("deadline", "dropped"):
        w = text_width(item.label, FONT) + 10
        x0 = central + 8 if item.side == "right" else central - 8 - w
        parts.append(f'<rect x="{x0:.1f}" y="{y - 11:.1f}" width="{w:.1f}" height="15" rx="3"/>')
        parts.append(text(x0 + w / 2, y, item.label, FONT))
        classes = ["note", item.kind]
    else:
        start, end = (central, far) if item.outward else (far, central)
        tip = 6 if end > start else -6
        parts.append(f'<line x1="{start:.1f}" y1="{y:.1f}" x2="{end - tip:.1f}" y2="{y:.1f}"/>')
        if item.kind == "fan":
            for server, _ in item.marks:
                parts.append(arrowhead(chart.x(server), y, leftward=False))
        else:
            parts.append(arrowhead(end, y, leftward=end < start))
        if "welcomed" in item.classes:
            parts.append(arrowhead(start, y, leftward=start < end))
        if item.kind == "replies":
            for server, how in item.marks:
                parts.append(f'<circle class="{how}" cx="{chart.x(server):.1f}" cy="{y:.1f}" r="3.5"/>')
        body, middle = label_at(chart, item, start, end, FONT, bold)
        if body:
            parts.append(text(middle, y - 4, body, FONT))
    data = f' data-nodes={quoteattr(" ".join(item.nodes))}'
    if item.request:
        data += f' data-req="{item.request}"'
    return f'<g class="{" ".join(classes)}"{data}>' + "".join(parts) + "</g>"


def heads(chart: Chart, y: float) -> list[str]:
    out = []
    box, size = chart.column - 12, 11 if chart.column == COLUMN else 10
    for name in chart.columns:
        x = chart.x(name)
        out.append(
            f'<g class="head" data-node="{escape(name)}"><rect x="{x - box / 2:.1f}" y="{y:.1f}" width="{box}" height="20" rx="4"/>'
            + text(x, y + 14, chart.heads[name], size)
            + "</g>"
        )
    return out


LEGEND = [
    ("line", "#3b5b8c", "message"),
    ("line", "#1f8a3b", "answer with matches"),
    ("line", "#666", "answer: no match"),
    ("dash", "#c62828", "late reply (dropped)"),
    ("dot", "#1f8a3b", "reply: match"),
    ("ring", "#7a8aa3", "reply: no match"),
]


def legend(x0: float, y: float, width: float) -> list[str]:
    """The legend from (x0, y), wrapping onto a second line at `width`."""
    out, x = [], x0
    for shape, color, words in LEGEND:
        room = 30 + text_width(words, FONT) + 20
        if x + room > width:
            x, y = x0, y + 16
        if shape in ("line", "dash"):
            dash = ' stroke-dasharray="5 3"' if shape == "dash" else ""
            out.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 24:.1f}" y2="{y:.1f}" stroke="{color}" stroke-width="2"{dash}/>')
        else:
            fill = color if shape == "dot" else "white"
            out.append(f'<circle cx="{x + 12:.1f}" cy="{y:.1f}" r="3.5" fill="{fill}" stroke="{color}"/>')
        out.append(text(x + 30, y + 4, words, FONT, anchor="start"))
        x += room
    return out


def body(chart: Chart) -> tuple[list[str], int]:
    """The chart below its header: bands, the time axis, lifelines, items; and its height."""
    bottom = y_of(chart.rows) + 24
    out = []
    for i, (first, last, name) in enumerate(chart.bands):
        top, end = y_of(first) - ROW + 3, y_of(last) + 6
        out.append(f'<rect class="band{" odd" if i % 2 else ""}" x="0" y="{top:.1f}" width="{chart.width}" height="{end - top:.1f}"/>')
    firsts = {first: name for first, _, name in chart.bands}
    for name in chart.columns:
        x = chart.x(name)
        out.append(f'<line class="lifeline" x1="{x:.1f}" y1="{HEADER:.1f}" x2="{x:.1f}" y2="{bottom:.1f}"/>')
    for row, seconds in chart.gaps.items():
        y = y_of(row) - 4
        out.append(f'<g class="gap"><line x1="{GUTTER - 4:.1f}" y1="{y:.1f}" x2="{chart.width - 10:.1f}" y2="{y:.1f}"/>')
        out.append(text(GUTTER - 8, y + 4, f"{seconds:.3f} s later", 9, "axis", "end") + "</g>")
    for row, seconds in chart.row_time.items():
        if row in firsts:
            out.append(text(8, y_of(row) + 3, firsts[row], 11, "bandname", "start"))
        out.append(text(GUTTER - 8, y_of(row) + 3, f"{seconds:.4f} s", 9, "axis", "end"))
    out.extend(draw_item(chart, item) for item in chart.items)
    return out, int(bottom)


def top(chart: Chart, height: int) -> list[str]:
    width = chart.width
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<style>{STYLE}</style>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        text(12, 22, chart.title, 15, "title", "start"),
        text(12, 40, chart.subtitle + SUBTITLE, 11, "subtitle", "start"),
        *legend(12, 56, width),
        *heads(chart, HEADER - 24),
    ]


def sequence_diagram(report: Report) -> str:
    """The chart as one SVG picture, with the lifelines' heads repeated down the page."""
    chart = build(report)
    lines, height = body(chart)
    out = top(chart, height) + lines
    for row in chart.head_rows:
        out.extend(heads(chart, y_of(row) - 1))
    out.append("</svg>")
    return "\n".join(out)


PAGE_STYLE = """
body { margin: 0; font-family: Helvetica, Arial, sans-serif; font-size: 13px; }
header { position: sticky; top: 0; z-index: 1; background: white; box-shadow: 0 1px 4px #0002; }
.bar { display: flex; gap: 14px; align-items: center; padding: 6px 12px; background: #f4f6fa; }
.bar select, .bar button { font: inherit; }
.bar .hint { color: #555; }
svg { display: block; }
[data-nodes], .head { cursor: pointer; }
body.focus [data-nodes]:not(.hl) { opacity: 0.12; }
body.focus .hl line { stroke-width: 2.6; }
.head.hl rect { fill: #ffe9a8; }
"""

PAGE_SCRIPT = """
const items = [...document.querySelectorAll("#chart [data-nodes]")];
const heads = [...document.querySelectorAll(".head")];
const pick = { client: document.getElementById("client"), server: document.getElementById("server") };
let pinned = null;
// Highlights one request ({req: "C3.2"}) or everything one node takes part in ({node: "S4"}).
function show(focus) {
  document.body.classList.toggle("focus", !!focus);
  for (const g of items) {
    const on = !!focus && (focus.req ? g.dataset.req === focus.req : g.dataset.nodes.split(" ").includes(focus.node));
    g.classList.toggle("hl", on);
  }
  for (const h of heads) h.classList.toggle("hl", !!focus && h.dataset.node === focus.node);
  for (const [side, select] of Object.entries(pick)) {
    select.value = focus && focus.node && [...select.options].some(o => o.value === focus.node) ? focus.node : "";
  }
}
function pin(focus) {
  pinned = focus;
  show(focus);
  const hash = focus ? (focus.req ? "#req=" + focus.req : "#node=" + focus.node) : " ";
  history.replaceState(null, "", hash);
}
for (const g of items) {
  g.addEventListener("mouseenter", () => { if (!pinned && g.dataset.req) show({ req: g.dataset.req }); });
  g.addEventListener("mouseleave", () => { if (!pinned) show(null); });
  g.addEventListener("click", e => {
    e.stopPropagation();
    const focus = g.dataset.req ? { req: g.dataset.req } : { node: g.dataset.nodes.split(" ")[0] };
    pin(pinned && JSON.stringify(pinned) === JSON.stringify(focus) ? null : focus);
  });
}
for (const h of heads) h.addEventListener("click", e => { e.stopPropagation(); pin({ node: h.dataset.node }); });
for (const select of Object.values(pick)) select.addEventListener("change", () => pin(select.value ? { node: select.value } : null));
document.getElementById("all").addEventListener("click", () => pin(null));
document.getElementById("chart").addEventListener("click", () => pin(null));
const asked = new URLSearchParams(location.hash.slice(1));
if (asked.get("req")) pin({ req: asked.get("req") });
else if (asked.get("node")) pin({ node: asked.get("node") });
const first = items.find(g => g.classList.contains("hl"));
if (first) first.scrollIntoView({ block: "center" });
"""


def page(report: Report) -> str:
    """The chart as an interactive page: the title, legend and lifelines' heads stay at the
    top while it scrolls; hovering over a request's arrow highlights its find, queries,
    replies, deadline and answer and fades the rest; clicking pins it (and puts it in the
    address, `#req=C3.2`); a node's head or the filters pin everything that node takes part
    in (`#node=S4`). Self-contained: the styles and the script are inline."""
    chart = build(report)
    lines, bottom = body(chart)
    top_svg = top(chart, HEADER) + ["</svg>"]
    options = {
        side: "".join(f"<option>{escape(name)}</option>" for name in chart.columns if side_of(chart, name) == side)
        for side in ("left", "right")
    }
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(chart.title)}</title>",
            f"<style>{PAGE_STYLE}</style></head><body>",
            '<header><div class="bar">',
            f'<label>Client <select id="client"><option value="">all</option>{options["left"]}</select></label>',
            f'<label>Server <select id="server"><option value="">all</option>{options["right"]}</select></label>',
            '<button id="all">Show all</button>',
            '<span class="hint">Hover over an arrow to follow its request; click to keep it; click a name to follow a node.</span>',
            "</div>",
            *top_svg,
            "</header>",
            f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{chart.width}" height="{bottom - HEADER}" '
            f'viewBox="0 {HEADER} {chart.width} {bottom - HEADER}">',
            f"<style>{STYLE}</style>",
            *lines,
            "</svg>",
            f"<script>{PAGE_SCRIPT}</script>",
            "</body></html>",
        ]
    )


def side_of(chart: Chart, name: str) -> str:
    central = chart.columns.index(CENTRAL)
    index = chart.columns.index(name)
    return "left" if index < central else "right" if index > central else "middle"
