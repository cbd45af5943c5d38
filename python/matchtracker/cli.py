"""The command line: argument parsing, then one call into the package.

Every user mistake ends with one line on stderr and exit code 2; Ctrl-C ends with one line
and exit code 130; never a traceback for either.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import NoReturn, Sequence

from . import MatchTrackerError, Report, run_simulation
from ._core import MAX_N, MAX_ROUNDS, MAX_SECONDS

DEFAULT_N = 3
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description=(
            "Run the central-tracker assignment: n servers each draw a number from 1 to 10 and "
            "say Hello to the central tracker, n clients say Hi, then in each round every "
            "client asks the tracker which servers hold a number it picked. Every message "
            "sent and received is printed. Other commands, as the first argument: "
            "`tracker`, `server`, `client` run one role as its own process (across hosts); "
            "`bench` measures the tracker. Each has its own --help."
        ),
    )
    parser.add_argument(
        "n",
        nargs="?",
        help=f"number of servers and of clients, from 2 to {MAX_N:,} (asked for on a terminal; "
        f"{DEFAULT_N} otherwise)",
    )
    parser.add_argument("--rounds", type=int, default=5, metavar="R", help=f"rounds of requests, from 1 to {MAX_ROUNDS:,} (default 5)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long the tracker waits for servers' replies to a request, more than 0 and at "
        f"most {MAX_SECONDS:,.0f} (default 2.0)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="X",
        help="seed for the random numbers, from 0 to 2**64-1, so a run can be repeated exactly",
    )
    parser.add_argument(
        "--early",
        action="store_true",
        help="servers also reply when they do not match, so a request ends as soon as "
        "every server has replied instead of at the deadline",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print only the final summary, not every message",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per event (time, from, to, kind, fields) instead of the "
        "message lines, and no summary; with --quiet, the summary's figures as one JSON object",
    )
    parser.add_argument(
        "--diagram",
        metavar="FILE",
        help="also draw the run as a message-sequence chart: FILE.svg, or FILE.html wrapping "
        "the SVG (not with --quiet, which records no events)",
    )
    return parser


def parse_n(text: str | None, parser: argparse.ArgumentParser) -> int:
    if text is None:
        return ask_n() if sys.stdin.isatty() else DEFAULT_N
    try:
        return int(text)
    except ValueError:
        parser.error(f"n must be a whole number of at least 2 (got {text!r})")


def ask_n() -> int:
    """Asks for n on the terminal until the answer is usable; Enter takes the default."""
    while True:
        try:
            text = input(f"Number of servers and clients, n (at least 2) [{DEFAULT_N}]: ").strip()
        except EOFError:
            return DEFAULT_N
        if not text:
            return DEFAULT_N
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n >= 2:
            return n
        print(f"Please enter a whole number of at least 2 (got {text!r}).")


def main(argv: Sequence[str] | None = None, prog: str = "matchtracker") -> int:
    """Runs the command line; returns the exit code."""
    try:
        return _main(argv, prog)
    except Terminated:
        print(f"{prog}: stopped (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MatchTrackerError as e:  # not the user's mistake: say what failed, no traceback
        print(f"{prog}: failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as command-line tools do. Point
        # stdout at /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None, prog: str) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from . import bench

        return bench.main(argv[1:], prog, _Parser)
    if argv[:1] in (["tracker"], ["server"], ["client"]):
        from . import roles

        return roles.main(argv[0], argv[1:], prog, _Parser)
    if argv[:1] == ["simulate"]:
        argv = argv[1:]
        prog = f"{prog} simulate"
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.diagram is not None and not args.diagram.endswith((".svg", ".html")):
        parser.error(f"--diagram must name a .svg or .html file (got {args.diagram!r})")
    if args.quiet and args.diagram:
        parser.error("--quiet records no events, so it cannot go with --diagram")
    if args.diagram is not None:
        check_writable(args.diagram, parser)
    # SIGTERM stops a run the way Ctrl-C does: everything it opened is closed, one line.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        n = parse_n(args.n, parser)
        report = run_simulation(
            n,
            args.rounds,
            timeout=args.timeout,
            seed=args.seed,
            early=args.early,
            quiet=args.quiet,
            json=args.json,
        )
    except ValueError as e:
        parser.error(str(e))
    if args.diagram:
        write_diagram(report, args.diagram, prog)
        print(f"{prog}: diagram written to {args.diagram}", file=sys.stderr, flush=True)
    if args.json and args.quiet:
        print(json.dumps(figures(report)), flush=True)
    elif not args.json:
        print(report.summary(), flush=True)
    return 0


def figures(report: Report) -> dict:
    """The run's setup and the summary's figures, for `--quiet --json`."""
    setup = {"n": report.n, "rounds": report.rounds, "timeout": report.timeout, "early": report.early}
    return {**setup, **report.totals(), "open_files": report.open_files}


def check_writable(path: str, parser: argparse.ArgumentParser) -> None:
    """Refuses a diagram path that cannot be written before the run, not after it."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"--diagram: the folder {folder} does not exist")
    if os.path.isdir(path) or not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        parser.error(f"--diagram: cannot write {path}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so a run stops the same clean way."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated()


def write_diagram(report: Report, path: str, prog: str) -> None:
    from ._diagram import page

    text = page(report) if path.endswith(".html") else report.sequence_diagram()
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        print(f"{prog}: cannot write the diagram to {path}: {e.strerror}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None
