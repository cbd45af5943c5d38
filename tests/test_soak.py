"""The 30-second soak (benches/soak.py): the roles as processes under load, with servers and
clients killed at random, one tracker restart and a hostile churn; every answer checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "benches" / "soak.py"


def test_a_thirty_second_soak_answers_right_and_gives_everything_back() -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "30"], capture_output=True, text=True, timeout=240
    )
    assert result.returncode in (0, 1), result.stderr
    figures = json.loads(result.stdout)
    assert figures["wrong"] == 0, figures
    assert figures["missing"] == 0, figures
    assert figures["answered"] > 1000 and figures["kills"] >= 10 and figures["hostile_connections"] > 100
    # Every node gone, the tracker holds what it held when it started.
    assert figures["tracker_end"]["descriptors"] == figures["tracker_start"]["descriptors"], figures
