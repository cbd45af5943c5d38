"""One wheel for every Python: the package builds against the stable ABI (abi3, CPython 3.9
and newer), and the one wheel installs and runs in the oldest and newest Pythons here, in
fresh virtual environments, with no Rust toolchain on PATH."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = """
import asyncio, sys
import matchtracker
from matchtracker import aio

report = matchtracker.run_simulation(3, 2, timeout=0.05, seed=1, quiet=True)
assert len(report.requests) == 6 and report.totals()["incomplete"] == 0

async def main():
    async with aio.Tracker.start(timeout=0.2) as tracker, \\
               aio.Server.start("S1", tracker.address, number=2), \\
               aio.Client.connect("C1", tracker.address) as client:
        assert await asyncio.gather(client.find_match(2), client.find_match(3)) == [["S1"], []]

asyncio.run(main())
try:
    matchtracker.run_simulation(2**70)
except ValueError as e:
    assert "n must be at most" in str(e)
print("ok", sys.version_info[:2])
"""

# The asyncio nodes' tasks must be done with Python before the interpreter finalizes: an
# exit right after asyncio.run, many times over.
EXITS = """
import asyncio
from matchtracker import aio

async def main():
    async with aio.Tracker.start(timeout=0.1) as tracker, \\
               aio.Server.start("S1", tracker.address, number=2), \\
               aio.Client.connect("C1", tracker.address) as client:
        await asyncio.gather(client.find_match(2), client.find_match(3))

asyncio.run(main())
"""


def pythons() -> list[str]:
    """The oldest and newest CPython 3.9+ that pyenv has here."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = []
    for path in glob.glob(f"{root}/versions/3.*/bin/python3"):
        minor = int(Path(path).parents[1].name.split(".")[1])
        if minor >= 9:
            found.append((minor, path))
    found.sort()
    return [found[0][1], found[-1][1]] if found else []


def test_an_exit_right_after_asyncio_never_crashes() -> None:
    for _ in range(10):
        result = subprocess.run([sys.executable, "-c", EXITS], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (result.returncode, result.stderr[-2000:])


def test_one_abi3_wheel_runs_in_the_oldest_and_newest_python(tmp_path: Path) -> None:
    interpreters = pythons()
    if len(interpreters) < 2:
        pytest.skip("needs pyenv's Pythons (3.9 to 3.13 on this machine type)")
    maturin = [shutil.which("maturin")] if shutil.which("maturin") else [sys.executable, "-m", "maturin"]
    built = subprocess.run(
        [*maturin, "build", "--release", "--out", str(tmp_path / "dist")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert "-cp39-abi3-" in wheel.name, wheel.name
    # No cargo, rustc or maturin to be found: the wheel alone must do.
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for python in interpreters:
        venv = tmp_path / Path(python).parents[1].name
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
        install = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--no-index", "-q", str(wheel)],
            env=bare,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert install.returncode == 0, install.stderr
        run = subprocess.run(
            [str(venv / "bin" / "python"), "-c", SMOKE], env=bare, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0 and run.stdout.startswith("ok"), (python, run.stdout, run.stderr[-3000:])
