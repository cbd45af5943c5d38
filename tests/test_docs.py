"""The documentation's examples, run as a reader would run them, and compared with what the
documentation says they print.

README.md: every ```python block followed by "It prints:" and a plain block is run as a
script in a process of its own; its output must be exactly the plain block.
docs/PROTOCOL.md: "A session by hand" is typed into a tracker started as the text says,
line by line, over two connections, and every line the tracker sends must be the one shown.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import matchtracker

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PROTOCOL = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")

EXAMPLE = re.compile(r"```python\n(?P<code>.*?)```\n\nIt prints:\n\n```\n(?P<output>.*?)```", re.S)
EXAMPLES = [(m["code"], m["output"]) for m in EXAMPLE.finditer(README)]


def test_the_readme_has_examples_with_their_output() -> None:
    # The three of the Python API section: the simulation, the nodes, asyncio.
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("code, output", EXAMPLES, ids=[f"example-{i + 1}" for i in range(len(EXAMPLES))])
def test_a_readme_example_prints_what_the_readme_shows(code: str, output: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == output


def session_by_hand() -> tuple[float, list[list[str]]]:
    """The deadline the text starts its tracker with, and its terminals: each a list of lines,
    comments and the `$ nc` line taken off."""
    section = PROTOCOL.split("## A session by hand", 1)[1]
    timeout = float(re.search(r"--timeout (\d+)", section)[1])
    block = section.split("```\n", 2)[1]
    terminals: list[list[str]] = []
    for line in block.splitlines():
        if line.startswith("$ nc"):
            terminals.append([])
        elif line.strip():
            terminals[-1].append(line.split("#", 1)[0].strip())
    return timeout, terminals


# What a node types; every other line is what the tracker sends.
TYPED = {"HELLO", "HI", "FIND", "MATCH", "MISS", "CANCEL", "PING", "BYE"}


class Terminal:
    """One `nc` session: lines typed, lines read back with a deadline."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.lines = self.sock.makefile("r", encoding="utf-8", newline="\n")

    def play(self, script: list[str], upto: str | None = None) -> list[str]:
        """Plays `script` from its start until (not including) the line starting with `upto`;
        returns the rest."""
        while script and not (upto and script[0].startswith(upto)):
            line = script.pop(0)
            if line.split()[0] in TYPED:
                self.sock.sendall(line.encode() + b"\n")
            else:
                assert self.lines.readline().rstrip("\n") == line
        return script


def test_protocol_md_session_by_hand_plays_out_as_written() -> None:
    timeout, (server_lines, client_lines) = session_by_hand()
    with matchtracker.Tracker(timeout=timeout) as tracker:
        server, client = Terminal(tracker.port), Terminal(tracker.port)
        # The server registers first, then stops where the tracker's query will come.
        rest = server.play(list(server_lines), upto="QUERY")
        tracker.wait_for_nodes(1)
        # The client asks; the server, reading the query, answers it; the client goes on.
        after_ask = client.play(list(client_lines), upto="ANSWER")
        server.play(rest)
        client.play(after_ask)
        for terminal in (server, client):
            terminal.sock.close()
