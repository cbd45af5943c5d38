"""`python -m matchtracker`: the same command line as ./project.py."""

from .cli import main

raise SystemExit(main(prog="python -m matchtracker"))
