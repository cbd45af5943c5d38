"""./project.py and python -m matchtracker as a user meets them: exit codes, one-line errors,
help, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "project.py"


def run(*args: str, module: bool = False, stdin: str = "") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "matchtracker"] if module else [sys.executable, str(PROJECT)]
    return subprocess.run(
        [*command, *args], input=stdin, capture_output=True, text=True, encoding="utf-8", timeout=60
    )


@pytest.mark.parametrize("n", ["1", "0", "-3", "abc", "2.5"])
@pytest.mark.parametrize("module", [False, True])
def test_a_bad_n_is_one_line_and_exit_2(n: str, module: bool) -> None:
    result = run(n, module=module)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "n must be" in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, word",
    [
        (["3", "--rounds", "0"], "rounds must be"),
        (["3", "--timeout", "-1"], "timeout must be"),
        (["3", "--timeout", "soon"], "--timeout"),
        (["3", "--bogus"], "unrecognized arguments"),
        (["99999999999999999999"], "n must be at most 100000 (got 99999999999999999999)"),
        (["3", "--rounds", "99999999999999999999"], "rounds must be at most"),
        (["bench", "--scale", "99999999999999999999"], "n must be at most"),
        (["3", "4"], "unrecognized arguments"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args: list[str], word: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and word in result.stderr


def test_help_explains_every_flag() -> None:
    result = run("--help")
    assert result.returncode == 0
    for flag in ("--rounds", "--timeout", "--seed", "--early", "--quiet"):
        assert flag in result.stdout


def test_without_n_and_without_a_terminal_n_is_3() -> None:
    result = run("--timeout", "0.2", "--rounds", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Summary: n=3, 1 round, 3 requests")


def test_quiet_prints_only_the_summary() -> None:
    result = run("4", "--timeout", "0.2", "--rounds", "2", "--quiet", "--seed", "1", module=True)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Summary: n=4, 2 rounds, 8 requests")
    # Nothing but the summary: its header lines, then one line per server and per client.
    assert not any(": sending" in line or "Central:" in line for line in lines)
    assert len(lines) == 2 + 1 + 4 + 1 + 4


def test_a_missing_extension_is_one_line() -> None:
    # -S hides site-packages, where the package is installed.
    result = subprocess.run([sys.executable, "-S", str(PROJECT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "project.py: the matchtracker package is not installed; run `pip install .` in this folder first"
    )


@pytest.mark.parametrize("moment", ["sending “Hello”", "received “Welcome”", "find match of"])
def test_ctrl_c_ends_the_run_with_130_and_one_line(moment: str) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT), "3", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=env,
    )
    try:
        # Wait for the run to reach the moment, then interrupt it.
        for line in proc.stdout:
            if moment in line:
                break
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
    finally:
        proc.kill()
    assert code == 130
    stderr = proc.stderr.read()
    assert stderr.strip() == "project.py: interrupted", stderr


def test_a_closed_pipe_ends_the_run_quietly() -> None:
    """`./project.py | head -1`: the reader goes away; no traceback."""
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT), "3", "--timeout", "0.2", "--rounds", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=30) == 0
    assert proc.stderr.read() == ""


def test_bench_closed_loop_smoke() -> None:
    result = run("bench", "--servers", "3", "--clients", "2", "--duration", "0.3", "--early", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["workload"] == "closed-loop" and data["requests"] > 0
    # The rate is per second of what was measured, and says so.
    assert data["elapsed_seconds"] >= 0.3 and isinstance(data["requests"], int)
    assert abs(data["requests_per_second"] - data["requests"] / data["elapsed_seconds"]) < 1e-6 * data["requests"]
    assert data["latency_p50_ms"] <= data["latency_p99_ms"] <= data["latency_max_ms"]


def test_bench_scale_smoke() -> None:
    result = run("bench", "--scale", "20", "--rounds", "2", "--timeout", "0.2", "--json", module=True)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["requests"] == 40 and data["incomplete_answers"] == 0
    assert data["open_files"] >= 4 * 20
    # The measured process is the user's command, and its figures are that process's.
    assert data["command"].startswith("python -m matchtracker 20 --quiet")
    assert data["peak_memory_mib"] > 1 and data["cpu_seconds"] > 0
    # Only matches reply, so each round lasts at least its deadline; the phases fit the run,
    # and the run fits the process.
    assert data["startup_seconds"] > 0 and data["closing_seconds"] > 0
    assert data["rounds_seconds"] >= data["floor_seconds"]
    phases = data["startup_seconds"] + data["rounds_seconds"] + data["closing_seconds"]
    assert phases <= data["run_seconds"] + 1e-6 and data["run_seconds"] < data["wall_seconds"]


def test_a_large_quiet_run_keeps_its_summary_short() -> None:
    result = run("30", "--timeout", "0.05", "--rounds", "8", "--quiet", "--seed", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) < 60 and len(result.stdout) < 8 * 1024
    assert lines[2].startswith("  servers holding each number: 1: ")
    held = sum(int(part.split(": ")[1]) for part in lines[2].split(":", 1)[1].split(","))
    assert held == 30
    assert "    ... and 10 more" in lines
    assert all(line.endswith("… and 3 more requests") for line in lines if line.startswith("    C"))


def test_quiet_json_prints_the_summary_figures() -> None:
    result = run("6", "--timeout", "0.1", "--rounds", "2", "--quiet", "--json", "--seed", "2", module=True)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert (figures["n"], figures["rounds"], figures["requests"]) == (6, 2, 12)
    assert figures["matched"] + figures["no_match"] == 12 and figures["incomplete"] == 0
    assert figures["startup"] + 2 * 0.1 + figures["closing"] <= figures["duration"]


def test_bench_python_smoke() -> None:
    result = run("bench", "--python", "--duration", "0.2", "--json", module=True)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["workload"] == "python"
    assert data["rust_p50_us"] > 0 and data["blocking_p50_us"] > 0 and data["asyncio_p50_us"] > 0
    # 1,000 requests of one client, each waiting out a 0.3 s deadline or answered at once:
    # all in flight together, or this would take minutes.
    assert 0.3 <= data["gather_1000_calls_seconds"] < 30
    assert 0.3 <= data["threads_200_calls_32_threads_seconds"] < 30


def test_bench_bad_flags_are_one_line() -> None:
    result = run("bench", "--servers", "0", "--duration", "0.1")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
