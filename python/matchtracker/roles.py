"""`project.py tracker | server | client`: each role as its own process, on one host or many.

Every role prints its own lines in the same words as the simulation, so the outputs of all
the processes read like one run. SIGINT and SIGTERM stop any role cleanly: a tracker says
BYE to its nodes; servers and clients close. Servers and clients whose tracker goes away
reconnect (capped exponential backoff) and register again.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Sequence

from . import _core

TOKEN_ENV = "MATCHTRACKER_TOKEN"


def add_token(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token",
        metavar="T",
        help=f"shared secret that nodes present to the tracker; prefer the {TOKEN_ENV} "
        "environment variable, which other users cannot see in the process list",
    )


def build_parser(role: str, prog: str, parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = parser_class(prog=f"{prog} {role}", description=__doc__.split("\n\n")[0])
    if role == "tracker":
        parser.description = "Run the central tracker until stopped (Ctrl-C or SIGTERM)."
        parser.add_argument(
            "--listen",
            default="127.0.0.1:0",
            metavar="HOST:PORT",
            help="address to listen on (default 127.0.0.1:0, a free port on loopback); "
            "any other than loopback needs TLS and a token",
        )
        parser.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS", help=f"request deadline, more than 0 and at most {_core.MAX_SECONDS:,.0f} (default 2)")
        parser.add_argument("--early", action="store_true", help="servers reply on no match too; requests end early")
        add_token(parser)
        parser.add_argument(
            "--token-file",
            metavar="FILE",
            help="read the token from FILE (its first line), and again on SIGHUP, so it can be "
            "changed without a restart",
        )
        parser.add_argument(
            "--insecure-no-token",
            action="store_true",
            help="listen beyond loopback without a token: anyone who can reach the port can join",
        )
        parser.add_argument("--tls-cert", metavar="FILE", help="speak TLS with this certificate chain (PEM)")
        parser.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
        parser.add_argument(
            "--cluster",
            metavar="URLS",
            help="join the trackers of this NATS cluster (nats://HOST:PORT, comma-separated) "
            "as one Central; see docs/CLUSTER.md",
        )
        parser.add_argument(
            "--cluster-name",
            metavar="NAME",
            help="trackers with the same NATS and the same name are one Central (default matchtracker)",
        )
        parser.add_argument(
            "--insecure-plaintext",
            action="store_true",
            help="listen beyond loopback without TLS: the token, names and requests cross the network readable",
        )
        parser.add_argument(
            "--keepalive",
            type=float,
            default=5.0,
            metavar="SECONDS",
            help="probe a connection silent this long (TCP keepalive); a node whose host vanished "
            "without closing is dropped about 2.5 times this long after it went quiet (default 5)",
        )
        parser.add_argument(
            "--drain-timeout",
            type=float,
            metavar="SECONDS",
            help="on SIGTERM or Ctrl-C, answer the open requests for at most this long before saying BYE "
            "(default: the deadline plus 1); a second signal stops at once",
        )
        parser.add_argument(
            "--monitor",
            metavar="HOST:PORT",
            help="serve /metrics (Prometheus), /healthz, /readyz and /stats over HTTP on this address, "
            "such as 127.0.0.1:8222; beyond loopback it asks for the token as 'Authorization: Bearer'",
        )
        parser.add_argument(
            "--monitor-insecure",
            action="store_true",
            help="let a monitor beyond loopback answer without the token: anyone who can reach it "
            "sees node names and figures",
        )
    else:
        parser.description = (
            "Run a server that answers the tracker's queries until stopped."
            if role == "server"
            else "Run a client that makes its requests, then exits."
        )
        parser.add_argument(
            "--tracker",
            required=True,
            metavar="HOST:PORT",
            help="the tracker's address, or several trackers of one cluster, comma-separated: "
            "the node registers with the first that answers, and moves to another if it goes away",
        )
        parser.add_argument("--name", required=True, help="this node's name, such as S1 or C1")
        parser.add_argument(
            "--number",
            type=int,
            metavar="K",
            help="the number held (1 to 10; drawn at random if not given)"
            if role == "server"
            else "the number to ask for in every round (drawn each round if not given)",
        )
        if role == "client":
            parser.add_argument("--rounds", type=int, default=5, metavar="R", help=f"requests to make, from 1 to {_core.MAX_ROUNDS:,} (default 5)")
            parser.add_argument("--seed", type=int, metavar="X", help="seed for the numbers drawn, from 0 to 2**64-1")
        add_token(parser)
        parser.add_argument("--tls", action="store_true", help="speak TLS to the tracker, trusting the system's CAs")
        parser.add_argument(
            "--tls-ca",
            metavar="FILE",
            help="speak TLS to the tracker, trusting the CA certificates in FILE (PEM) instead",
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=30.0,
            metavar="SECONDS",
            help="at start, keep trying to reach the tracker this long, then give up with exit 1 (default 30)",
        )
        parser.add_argument(
            "--reconnect-for",
            type=float,
            metavar="SECONDS",
            help="after losing a tracker it was registered with, keep trying to reach it this long "
            "(default: for as long as it runs)",
        )
    parser.add_argument("--json", action="store_true", help="print one JSON object per event instead of lines")
    return parser


def main(role: str, argv: Sequence[str], prog: str, parser_class: type[argparse.ArgumentParser]) -> int:
    parser = build_parser(role, prog, parser_class)
    args = parser.parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    token_file = getattr(args, "token_file", None)
    if token_file is not None:
        if args.token:
            parser.error("--token and --token-file are two ways to give one token: give one")
        token = None  # the file's token, not the environment's
    if role == "tracker" and (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together: give both for TLS, or neither")
    # SIGTERM ends a role the way Ctrl-C does: cleanly, through the same path.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if role == "tracker":
            _core.serve_tracker(
                args.listen,
                timeout=args.timeout,
                early=args.early,
                token=token,
                insecure_no_token=args.insecure_no_token,
                json=args.json,
                keepalive=args.keepalive,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                insecure_plaintext=args.insecure_plaintext,
                cluster=args.cluster.split(",") if args.cluster else None,
                cluster_name=args.cluster_name,
                drain_timeout=args.drain_timeout,
                monitor=args.monitor,
                monitor_insecure=args.monitor_insecure,
                token_file=token_file,
            )
        else:
            patience = {"wait": args.wait, "reconnect_for": args.reconnect_for, "tls": args.tls, "tls_ca": args.tls_ca}
            if role == "server":
                _core.serve_server(args.name, args.tracker, args.number, token=token, json=args.json, **patience)
            else:
                _core.run_client(
                    args.name,
                    args.tracker,
                    args.rounds,
                    args.number,
                    token=token,
                    seed=args.seed,
                    json=args.json,
                    **patience,
                )
    except ValueError as e:
        parser.error(str(e))
    except _core.MatchTrackerError as e:
        # Refused, unreachable, or failed for good: one line naming the role, and exit 1.
        print(f"{prog} {role}: failed: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        if role == "client":
            raise
        # Running until stopped is what a tracker and a server do: being stopped is success.
        print(f"{prog} {role}: stopped", file=sys.stderr)
    return 0
