"""`project.py bench`: measure the tracker. Prints a table, or one JSON object with --json.

Two workloads:
- closed loop (default): K servers, C clients, each client asking again as soon as it has
  its answer, for a duration; requests per second and latency quantiles;
- scale (--scale N): the whole assignment with n = N, quiet; wall time against the floor
  the deadline sets (rounds x timeout), split into start-up, rounds and closing, and
  whether every answer was complete.

CPU seconds and peak memory are the process's own (getrusage), so run one workload per
process when comparing them.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Sequence

from . import run_load, run_simulation


def build_parser(prog: str, parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = parser_class(prog=f"{prog} bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=10, metavar="K", help="servers in the closed loop (default 10)")
    parser.add_argument("--clients", type=int, default=10, metavar="C", help="clients in the closed loop (default 10)")
    parser.add_argument("--duration", type=float, default=5.0, metavar="S", help="seconds of closed-loop load (default 5)")
    parser.add_argument(
        "--early",
        action="store_true",
        help="servers reply on no match too, so requests end when all have replied "
        "(without it every request lasts the full deadline)",
    )
    parser.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS", help="the tracker's deadline (default 2)")
    parser.add_argument("--scale", type=int, metavar="N", help="instead, run the assignment with n = N, quiet")
    parser.add_argument("--rounds", type=int, default=5, metavar="R", help="rounds for --scale (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def usage() -> tuple[float, int]:
    """CPU seconds used so far and peak resident memory in KiB, of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def closed_loop(args: argparse.Namespace) -> dict:
    cpu_before, _ = usage()
    result = run_load(args.servers, args.clients, args.duration, timeout=args.timeout, early=args.early)
    cpu_after, peak = usage()
    return {
        "workload": "closed-loop",
        "servers": args.servers,
        "clients": args.clients,
        "early": args.early,
        "duration": args.duration,
        "requests": int(result["requests"]),
        "requests_per_second": result["rate"],
        "latency_p50_ms": result["p50"] * 1e3,
        "latency_p90_ms": result["p90"] * 1e3,
        "latency_p99_ms": result["p99"] * 1e3,
        "latency_max_ms": result["max"] * 1e3,
        "cpu_seconds": cpu_after - cpu_before,
        "peak_memory_mib": peak / 1024,
    }


def scale(args: argparse.Namespace) -> dict:
    cpu_before, _ = usage()
    started = time.perf_counter()
    report = run_simulation(args.scale, args.rounds, timeout=args.timeout, early=args.early, quiet=True)
    wall = time.perf_counter() - started
    # Taken before the check below, whose Python lists of names are not the run's memory.
    cpu_after, peak = usage()
    numbers = report.numbers
    wrong = sum(1 for r in report.requests if r.servers != sorted(
        (s for s, k in numbers.items() if k == r.number), key=lambda s: int(s[1:])))
    floor = args.rounds * args.timeout
    return {
        "workload": "scale",
        "n": args.scale,
        "rounds": args.rounds,
        "timeout": args.timeout,
        "early": args.early,
        "wall_seconds": wall,
        "floor_seconds": floor,
        "above_floor_seconds": wall - floor,
        # Where the time above the floor went: connecting every node, the rounds (each past
        # its deadline by the time its requests take to be read and answered), closing.
        "startup_seconds": report.startup,
        "rounds_seconds": report.duration - report.startup - report.closing,
        "closing_seconds": report.closing,
        "requests": len(report.requests),
        "incomplete_answers": wrong,
        "late_replies": report.late_replies,
        "cpu_seconds": cpu_after - cpu_before,
        "peak_memory_mib": peak / 1024,
        "open_files": report.open_files,
    }


def print_table(result: dict) -> None:
    width = max(len(k) for k in result)
    for key, value in result.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")


def main(argv: Sequence[str], prog: str, parser_class: type[argparse.ArgumentParser]) -> int:
    parser = build_parser(prog, parser_class)
    args = parser.parse_args(argv)
    try:
        result = scale(args) if args.scale is not None else closed_loop(args)
    except ValueError as e:
        parser.error(str(e))
    if args.json:
        json.dump(result, sys.stdout)
        print()
    else:
        print_table(result)
    return 0
