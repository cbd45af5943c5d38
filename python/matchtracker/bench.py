"""`project.py bench`: measure the tracker. Prints a table, or one JSON object with --json.

Two workloads:
- closed loop (default): K servers, C clients, each client asking again as soon as it has
  its answer, for a duration; requests per second and latency quantiles. CPU seconds and
  peak memory are this process's own (getrusage).
- scale (--scale N): the assignment with n = N exactly as a user runs it, `python -m
  matchtracker N --quiet` in a process of its own (with --json, so its figures can be
  read): wall time from start to exit, the process's CPU and peak memory, next to the
  run's own figures from that same process: its time against the floor the deadline sets
  (rounds x timeout), split into start-up, rounds and closing, and whether every answer
  was complete.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Sequence

from . import MatchTrackerError, _core, run_load
from .roles import TOKEN_ENV, add_token


def build_parser(prog: str, parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = parser_class(prog=f"{prog} bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers", type=int, metavar="K", help=f"servers in the closed loop, from 1 to {_core.MAX_N:,} (default 10)"
    )
    parser.add_argument(
        "--clients", type=int, metavar="C", help=f"clients in the closed loop, from 1 to {_core.MAX_N:,} (default 10)"
    )
    parser.add_argument("--duration", type=float, metavar="S", help="seconds of closed-loop load (default 5)")
    parser.add_argument(
        "--tracker",
        metavar="HOST:PORT",
        help="load this running tracker (its deadline and mode apply) instead of one started here",
    )
    add_token(parser)
    parser.add_argument(
        "--early",
        action="store_true",
        help="servers reply on no match too, so requests end when all have replied "
        "(without it every request lasts the full deadline)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help=f"the tracker's deadline, more than 0 and at most {_core.MAX_SECONDS:,.0f} (default 2)",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="the closed loop over TLS: the tracker started here uses this certificate (for localhost) "
        "with --tls-key, and its nodes trust --tls-ca",
    )
    parser.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert")
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="the CA the nodes trust: with --tls-cert, or to reach a --tracker over TLS",
    )
    parser.add_argument("--scale", type=int, metavar="N", help="instead, run the assignment with n = N, quiet")
    parser.add_argument("--rounds", type=int, default=5, metavar="R", help="rounds for --scale (default 5)")
    parser.add_argument(
        "--python",
        action="store_true",
        help="instead, the cost of a call from Python: one request at a time through the blocking and "
        "the asyncio client beside the same request inside Rust, then 200 calls from 32 threads on one "
        "client and 1,000 gathered on one asyncio client",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


CLOSED_LOOP_DEFAULTS = {"servers": 10, "clients": 10, "duration": 5.0}


def closed_loop(args: argparse.Namespace) -> dict:
    import resource

    def usage() -> tuple[float, int]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime, ru.ru_maxrss

    cpu_before, _ = usage()
    tls = {"tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_ca": args.tls_ca}
    token = args.token or os.environ.get(TOKEN_ENV) or None
    result = run_load(
        args.servers,
        args.clients,
        args.duration,
        timeout=args.timeout,
        early=args.early,
        tracker=args.tracker,
        token=token,
        **tls,
    )
    cpu_after, peak = usage()
    return {
        "workload": "closed-loop",
        "servers": args.servers,
        "clients": args.clients,
        "early": args.early,
        "tls": bool(args.tls_cert or args.tls_ca),
        "duration": args.duration,
        # What the rate divides by: from the first request to the last answer.
        "elapsed_seconds": result["elapsed"],
        "requests": result["requests"],
        "requests_per_second": result["rate"],
        "latency_p50_ms": result["p50"] * 1e3,
        "latency_p90_ms": result["p90"] * 1e3,
        "latency_p99_ms": result["p99"] * 1e3,
        "latency_max_ms": result["max"] * 1e3,
        "cpu_seconds": cpu_after - cpu_before,
        "peak_memory_mib": peak / 1024,
    }


class ScaleFailed(Exception):
    """The measured command did not finish well; the message is its own last words."""


def scale(args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "matchtracker", str(args.scale), "--quiet", "--json"]
    command += ["--rounds", str(args.rounds), "--timeout", str(args.timeout)] + (["--early"] if args.early else [])
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The figures are small and stderr at most a line, so reading them after the exit
    # cannot stall the child; wait4 gives its own CPU and peak memory.
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    out, err = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise ScaleFailed(err.strip() or f"{shlex.join(command)} exited with {child.returncode}")
    run = json.loads(out)
    floor = args.rounds * args.timeout
    return {
        "workload": "scale",
        "command": shlex.join(["python", *command[1:]]),
        "n": args.scale,
        "rounds": args.rounds,
        "timeout": args.timeout,
        "early": args.early,
        # The whole process, as the user waits for it: start-up of Python, the run, the
        # summary, the exit.
        "wall_seconds": wall,
        "floor_seconds": floor,
        "above_floor_seconds": wall - floor,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_memory_mib": usage.ru_maxrss / 1024,
        # The run inside it: connecting every node, the rounds (each past its deadline by the
        # time its requests take to be read and answered), closing.
        "run_seconds": run["duration"],
        "startup_seconds": run["startup"],
        "rounds_seconds": run["duration"] - run["startup"] - run["closing"],
        "closing_seconds": run["closing"],
        "requests": run["requests"],
        "incomplete_answers": run["incomplete"],
        "late_replies": run["late_replies"],
        "open_files": run["open_files"],
    }


def python_calls(args: argparse.Namespace) -> dict:
    """A call from Python against the same request inside Rust, side by side in one process."""
    import asyncio
    import time
    from concurrent.futures import ThreadPoolExecutor

    from . import Client, Server, Tracker, aio

    def p50(latencies: list[float]) -> float:
        return sorted(latencies)[len(latencies) // 2] if latencies else 0.0

    duration = args.duration or 5.0
    rust = run_load(1, 1, duration, early=True)
    with Tracker(timeout=2.0, early=True) as tracker, Server("S1", tracker.address, number=3):
        with Client("C1", tracker.address) as client:
            blocking: list[float] = []
            until = time.perf_counter() + duration
            while time.perf_counter() < until:
                sent = time.perf_counter()
                client.find_match(3)
                blocking.append(time.perf_counter() - sent)

        async def asyncio_loop() -> list[float]:
            latencies = []
            async with aio.Client.connect("C2", tracker.address) as client:
                until = time.perf_counter() + duration
                while time.perf_counter() < until:
                    sent = time.perf_counter()
                    await client.find_match(3)
                    latencies.append(time.perf_counter() - sent)
            return latencies

        asynchronous = asyncio.run(asyncio_loop())
    deadline = 0.3
    with Tracker(timeout=deadline) as tracker, Server("S1", tracker.address, number=3):
        with Client("C1", tracker.address) as client, ThreadPoolExecutor(max_workers=32) as pool:
            started = time.perf_counter()
            list(pool.map(client.find_match, [3 + i % 2 for i in range(200)]))
            threads = time.perf_counter() - started

        async def gathered() -> float:
            async with aio.Client.connect("C2", tracker.address) as client:
                started = time.perf_counter()
                await asyncio.gather(*(client.find_match(3 + i % 2) for i in range(1000)))
                return time.perf_counter() - started

        gather = asyncio.run(gathered())
    return {
        "workload": "python",
        "rust_p50_us": rust["p50"] * 1e6,
        "blocking_p50_us": p50(blocking) * 1e6,
        "blocking_over_rust": p50(blocking) / rust["p50"],
        "asyncio_p50_us": p50(asynchronous) * 1e6,
        "asyncio_over_rust": p50(asynchronous) / rust["p50"],
        "deadline_seconds": deadline,
        "threads_200_calls_32_threads_seconds": threads,
        "gather_1000_calls_seconds": gather,
    }


def print_table(result: dict) -> None:
    width = max(len(k) for k in result)
    for key, value in result.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)
        print(f"{key:<{width}}  {text}")


def main(argv: Sequence[str], prog: str, parser_class: type[argparse.ArgumentParser]) -> int:
    parser = build_parser(prog, parser_class)
    args = parser.parse_args(argv)
    closed_loop_flags = [f"--{k}" for k in CLOSED_LOOP_DEFAULTS if getattr(args, k) is not None]
    closed_loop_flags += [f"--{k.replace('_', '-')}" for k in ("tls_cert", "tls_key", "tls_ca") if getattr(args, k)]
    if args.python and (args.scale is not None or args.tracker or args.tls_cert or args.tls_ca):
        parser.error("--python measures on its own: not with --scale, --tracker or TLS")
    if args.scale is not None and (closed_loop_flags or args.tracker):
        parser.error(f"{', '.join(closed_loop_flags or ['--tracker'])}: for the closed loop, not --scale")
    for key, default in CLOSED_LOOP_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    try:
        if args.python:
            result = python_calls(args)
        else:
            result = scale(args) if args.scale is not None else closed_loop(args)
    except ValueError as e:
        parser.error(str(e))
    except MatchTrackerError as e:
        where = f"the tracker at {args.tracker}" if args.tracker else "its own tracker"
        print(f"{prog} bench: cannot load {where}: {e}", file=sys.stderr)
        return 1
    except ScaleFailed as e:
        # The child's own one-line message already names the program and the problem.
        message = str(e).splitlines()[-1]
        usage = re.fullmatch(r".*?: error: (.*?)(?: \(see --help\))?", message)
        if usage:
            parser.error(usage.group(1))
        print(f"{prog} bench: {message}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(result, sys.stdout)
        print()
    else:
        print_table(result)
    return 0
