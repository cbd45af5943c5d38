#!/usr/bin/env python3
"""The central-tracker assignment: ./project.py [N] (see ./project.py --help)."""

import sys

PROG = "project.py"


def run() -> int:
    try:
        from matchtracker.cli import main
    except ImportError:
        print(f"{PROG}: the matchtracker package is not installed; run `pip install .` in this folder first", file=sys.stderr)
        return 1
    return main(prog=PROG)


if __name__ == "__main__":
    try:
        sys.exit(run())
    except KeyboardInterrupt:
        # Ctrl-C before the command line took over (while importing, say).
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(130)
