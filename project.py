#!/usr/bin/env python3
"""The central-tracker assignment: ./project.py [N] (see ./project.py --help)."""

import sys

try:
    from matchtracker.cli import main
except ImportError:
    sys.exit("project.py: the matchtracker package is not installed; run `pip install .` in this folder first")

if __name__ == "__main__":
    sys.exit(main(prog="project.py"))
