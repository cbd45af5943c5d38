"""One wheel for every Python on any Linux: the package builds against the stable ABI (abi3,
CPython 3.9 and newer) and glibc 2.17 (manylinux2014, linked by zig), `auditwheel` agrees, and
the one wheel installs and runs in the oldest and newest Pythons here, in fresh virtual
environments, with no Rust toolchain on PATH. And the source distribution builds and installs
as `pip install matchtracker-*.tar.gz` would on a machine with Rust."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile
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


def maturin(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """maturin from this Python, with this Python's `bin` first on PATH: `--zig` finds zig
    (PyPI's `ziglang`) through the Python it runs with."""
    env = {**os.environ, **(env or {}), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "maturin", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_one_manylinux2014_abi3_wheel_runs_in_the_oldest_and_newest_python(tmp_path: Path) -> None:
    interpreters = pythons()
    if len(interpreters) < 2:
        pytest.skip("needs pyenv's Pythons (3.9 to 3.13 on this machine type)")
    # The command README.md gives for the wheel.
    built = maturin("build", "--release", "--zig", "--compatibility", "manylinux2014", "--out", str(tmp_path / "dist"))
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert "-cp39-abi3-" in wheel.name and "manylinux_2_17_x86_64" in wheel.name, wheel.name
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True, timeout=300
    )
    assert shown.returncode == 0, shown.stderr
    said = " ".join(shown.stdout.split())
    # auditwheel names the most compatible policy both the symbol versions and the shared
    # libraries allow: glibc 2.17, no library outside the policy's list.
    assert 'is consistent with the following platform tag: "manylinux_2_17_x86_64"' in said, said
    assert "external shared libraries are required" not in said, said
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


def test_the_sdist_holds_the_build_and_installs_in_a_fresh_environment(tmp_path: Path) -> None:
    made = maturin("sdist", "--out", str(tmp_path / "sdist"))
    assert made.returncode == 0, made.stderr[-3000:]
    (sdist,) = (tmp_path / "sdist").glob("matchtracker-*.tar.gz")
    with tarfile.open(sdist) as tar:
        held = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"Cargo.toml", "Cargo.lock", "pyproject.toml", "src/lib.rs", "python/matchtracker/__init__.py"} <= held
    # What the build needs and nothing else: no build output, tests, benches or tooling.
    assert not [name for name in held if name.split("/")[0] in {"target", "tests", "benches", "fuzz", ".ci", "dist"}]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # The Rust build reuses this checkout's compiled dependencies; the package itself is
    # built from the sdist's sources.
    env = {**os.environ, "CARGO_TARGET_DIR": str(ROOT / "target"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(sdist)], env=env, capture_output=True, text=True, timeout=900
    )
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run(
        [str(venv / "bin" / "python"), "-c", SMOKE], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and run.stdout.startswith("ok"), (run.stdout, run.stderr[-3000:])
