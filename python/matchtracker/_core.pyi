"""The native core of matchtracker (Rust, via PyO3). Import from `matchtracker` instead."""

import os
from typing import Any, Awaitable, Generator, Generic, Literal, TypedDict, TypeVar, final, type_check_only

from typing_extensions import Unpack

from .types import ErrorCode, Event, Totals

__version__: str

@type_check_only
class _TrackerOptions(TypedDict, total=False):
    """The keyword options every tracker takes (`Tracker`, `AsyncTracker.start`,
    `serve_tracker`), defined once; `Tracker.__new__` says what each does."""

    early: bool
    token: str | None
    insecure_no_token: bool
    keepalive: float
    tls_cert: str | os.PathLike[str] | None
    tls_key: str | os.PathLike[str] | None
    insecure_plaintext: bool
    cluster: str | list[str] | None
    cluster_name: str | None
    monitor: str | tuple[str, int] | None
    monitor_insecure: bool
    token_file: str | os.PathLike[str] | None

MAX_N: int
"""The most servers (and the most clients) a simulation or a benchmark takes."""
MAX_ROUNDS: int
"""The most rounds a simulation or a client takes."""
MAX_SECONDS: float
"""The longest deadline (and keepalive) a tracker takes, in seconds."""

class MatchTrackerError(Exception):
    """Base class of every matchtracker error."""

    code: ErrorCode | None
    """The protocol's code when the tracker refused with an ERROR line (RefusedError) or sent
    a line that does not parse; None otherwise. Branch on this, not on the message."""

class NetworkError(MatchTrackerError):
    """The tracker could not be reached, or the connection to it failed or closed."""

class RefusedError(MatchTrackerError):
    """The tracker refused the request with an ERROR line (for example, a taken name)."""

class ResponseTimeout(MatchTrackerError):
    """No answer came in time."""

@final
class RequestRecord:
    """One request of a simulation, as its client saw it answered."""

    @property
    def round(self) -> int:
        """Round, from 1."""
    @property
    def client(self) -> str:
        """The asking client's name."""
    @property
    def number(self) -> int:
        """The number asked for."""
    @property
    def servers(self) -> list[str]:
        """The servers holding the number, in index order; empty for no match."""
    @property
    def end(self) -> Literal["replied", "deadline", "noservers"]:
        """How the request ended."""
    @property
    def deadline(self) -> bool:
        """Whether the deadline ended it (some queried server had not replied)."""
    @property
    def elapsed(self) -> float:
        """Seconds from the client's request to its answer."""

@final
class Report:
    """What a simulation decided, and what it printed."""

    @property
    def n(self) -> int: ...
    @property
    def rounds(self) -> int: ...
    @property
    def timeout(self) -> float:
        """The tracker's deadline, in seconds."""
    @property
    def early(self) -> bool: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def duration(self) -> float:
        """Seconds the whole run took."""
    @property
    def startup(self) -> float:
        """Seconds from the start until every node was connected and registered."""
    @property
    def closing(self) -> float:
        """Seconds from the last answer until every socket was closed."""
    @property
    def late_replies(self) -> int:
        """Replies that came after their request was answered, and were dropped."""
    @property
    def open_files(self) -> int:
        """Open file descriptors of the process once every node was connected."""
    @property
    def numbers(self) -> dict[str, int]:
        """Each server's number, by name, in index order (S2 before S10)."""
    @property
    def requests(self) -> list[RequestRecord]:
        """Every request, round by round, clients in index order. Made on first access."""
    @property
    def transcript(self) -> list[str]:
        """The printed lines, in order (empty for a quiet run)."""
    @property
    def events(self) -> list[Event]:
        """Every event in order (empty for a quiet run): dicts with `time` (seconds from the
        start), `from`, `to` (None for a note), `kind` (such as "query.sent") and `fields`."""
    def to_dict(self) -> dict:
        """The report as plain dicts, lists, numbers and strings, ready for `json.dumps`.
        Requests with the same answer share one list object."""
    def to_json(self) -> str:
        """`to_dict()` as JSON text."""
    def summary(self) -> str:
        """Totals, latency, wall time, then each server and each client, as text. Long lists
        are cut with a count of the rest, so it stays under 60 lines at any n."""
    def totals(self) -> Totals:
        """The summary's figures, as a dict."""
    def sequence_diagram(self) -> str:
        """The run as a message-sequence chart: SVG text, self-contained.

        Raises:
            ValueError: the run was quiet, so it recorded no events to draw.
        """

def run_simulation(
    n: int,
    rounds: int = 5,
    *,
    timeout: float = 2.0,
    seed: int | None = None,
    early: bool = False,
    quiet: bool = False,
    json: bool = False,
    progress: bool | None = None,
) -> Report:
    """Run the assignment: a tracker on 127.0.0.1 (a free port), n servers, n clients.

    Each server draws a number from 1 to 10; in each round every client asks for a number it
    picked, all at once, and waits for the answer. Prints every message sent and received
    through `sys.stdout` as it happens, unless `quiet`.

    Args:
        n: servers and clients, at least 2 (and within the open-files limit and the local
            port range).
        rounds: requests per client, at least 1.
        timeout: the tracker's deadline for servers' replies, in seconds.
        seed: makes the numbers and picks, and so the answers, repeatable.
        early: servers also reply on no match, so requests end when all have replied.
        quiet: print nothing and record no events; the report's transcript is then empty.
        json: print one JSON object per event instead of the message lines.
        progress: show "round i of R" on stderr while the run lasts more than a second;
            None shows it when stderr is a terminal.

    Raises:
        ValueError: an argument is out of range (the message names it and the range), or
            the run cannot fit under the open-files limit or in the local port range.
        MatchTrackerError: the run failed.
        KeyboardInterrupt: on Ctrl-C; everything the run opened is closed.
    """

def run_load(
    servers: int,
    clients: int,
    duration: float,
    *,
    timeout: float = 2.0,
    early: bool = True,
    tracker: str | tuple[str, int] | list[str | tuple[str, int]] | None = None,
    token: str | None = None,
    tls: bool = False,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
) -> dict[str, float]:
    """Run a closed-loop load through one tracker on loopback and measure it.

    Each client asks again as soon as it has its answer, for `duration` seconds. Returns
    `requests` (an int), `elapsed` (seconds), `rate` (requests per second) and the latency
    quantiles `p50`, `p90`, `p99`, `max` (seconds). With `tracker`, the load goes to that
    running tracker (its own deadline and mode apply, and its `token`) instead of one started
    here.

    Over TLS: with `tls_cert` and `tls_key`, the tracker started here speaks TLS and its
    nodes connect to it by the name `localhost`, trusting `tls_ca`; with `tracker`, `tls` and
    `tls_ca` say how to reach it, as for `Client`.

    Raises:
        ValueError: an argument is out of range.
    """

def _watch_with(fd: int) -> None:
    """Gives the runtime the socket that wakes `matchtracker._watch`'s thread (its writing
    end's descriptor)."""

def _take_happenings() -> tuple[list[tuple[int, str, str, str]], int]:
    """The node happenings not yet taken, as (node key, node name, kind, text) with kind
    "lost", "back" or "ended", and how many were dropped since the last call."""

def serve_tracker(
    listen: str | tuple[str, int],
    *,
    timeout: float = 2.0,
    json: bool = False,
    drain_timeout: float | None = None,
    **options: Unpack[_TrackerOptions],
) -> None:
    """Run a tracker on `listen` in this thread, printing its lines, until Ctrl-C.

    The first line says where it listens (the next, where `monitor` serves). On Ctrl-C it drains: it stops accepting and
    reading requests, answers every open one (for at most `drain_timeout` seconds, by
    default the deadline plus 1), then says BYE to its nodes, closes every connection and
    raises KeyboardInterrupt; a second Ctrl-C stops at once. A connection silent for `keepalive` seconds
    is probed (TCP keepalive): a node whose host vanished is dropped about 2.5 times that
    long after it went quiet. Lines are printed as they come and kept nowhere; if the output
    falls behind, they are counted and dropped ("… N lines not printed").

    Raises:
        ValueError: a bad address, timeout or token; TLS files that cannot be read or do not
            match; a non-loopback address without TLS or a token (and no `insecure_*` flag).
        NetworkError: the address cannot be bound.
    """

def serve_server(
    name: str,
    tracker_address: str | tuple[str, int] | list[str | tuple[str, int]],
    number: int | None = None,
    *,
    token: str | None = None,
    json: bool = False,
    wait: float = 30.0,
    reconnect_for: float | None = None,
    tls: bool = False,
    tls_ca: str | os.PathLike[str] | None = None,
) -> None:
    """Run a server in this thread, printing its lines, until Ctrl-C (KeyboardInterrupt).

    At start it tries to reach the tracker for `wait` seconds. Whenever the tracker goes
    away later, the server reconnects with capped exponential backoff (0.1 s doubling to
    2 s) and registers again, for `reconnect_for` seconds (None: as long as it runs).

    Raises:
        ValueError: a bad name, number, address, token or time.
        RefusedError: the tracker refused (a wrong token, a name that is taken); `.code`
            says which.
        NetworkError: the tracker could not be reached in time.
    """

def run_client(
    name: str,
    tracker_address: str | tuple[str, int] | list[str | tuple[str, int]],
    rounds: int = 5,
    number: int | None = None,
    *,
    token: str | None = None,
    seed: int | None = None,
    json: bool = False,
    wait: float = 30.0,
    reconnect_for: float | None = None,
    tls: bool = False,
    tls_ca: str | os.PathLike[str] | None = None,
) -> list[list[str]]:
    """Make `rounds` requests as a client, printing its lines; return each answer's servers.

    Asks for `number` every round, or a number drawn each round (from `seed`, if given).
    At start it tries to reach the tracker for `wait` seconds; if the tracker goes away
    later, the client reconnects with backoff (for `reconnect_for` seconds, None: as long
    as it takes) and retries the request that was cut off, once.

    Raises:
        ValueError: a bad name, number, rounds, address, token or time.
        RefusedError: the tracker refused (a wrong token, a name that is taken).
        NetworkError: the tracker could not be reached in time.
        NetworkError, ResponseTimeout: a request failed again after its retry.
    """

@final
class Tracker:
    """A central tracker listening for servers and clients, in the background."""

    def __new__(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 2.0,
        **options: Unpack[_TrackerOptions],
    ) -> Tracker:
        """Listen on `host:port` (port 0 picks a free one); `timeout` is the request deadline;
        a node whose host vanished is dropped about 2.5 × `keepalive` seconds after it went
        quiet.

        With `token`, only nodes that present it in their greeting are admitted. With
        `tls_cert` and `tls_key` (PEM files: the certificate chain, and its private key) it
        speaks TLS, and nodes connect with `tls=True` or `tls_ca=`. Listening beyond loopback
        needs TLS and a token, unless `insecure_plaintext` and `insecure_no_token` accept the
        risks. With `cluster` (NATS urls), it joins the trackers of that NATS cluster with
        the same `cluster_name` (default "matchtracker") as one Central: requests reach every
        server of every tracker, and names are unique across them (docs/CLUSTER.md). With
        `monitor` ("host:port", port 0 for a free one) it also serves `/metrics`
        (Prometheus), `/healthz`, `/readyz` and `/stats` over HTTP there; beyond loopback that
        port asks for the token (`Authorization: Bearer <token>`) unless `monitor_insecure`.
        `token_file` gives the token as a file's first line instead of `token`, and
        `reload()` reads it again, with the TLS files.

        Raises:
            ValueError: a bad port, timeout or token; TLS files that cannot be read, or a key
                that does not match its certificate; a non-loopback host without TLS or a
                token.
            NetworkError: the address cannot be bound.
        """
    @property
    def address(self) -> str:
        """"host:port", ready to give to `Server` and `Client`."""
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def monitor_address(self) -> str | None:
        """"host:port" of the monitoring port, or None without one."""
    def reload(self) -> dict[str, bool]:
        """Read the TLS certificate and key (`tls_cert`, `tls_key`) and the `token_file` again:
        new handshakes use the new certificate, new greetings the new token, and every live
        node stays. All or nothing: if a file cannot be read or does not fit, the old ones
        stay. Returns which were read again: {"tls": ..., "token": ...}.

        Raises:
            ValueError: a file cannot be read, holds no certificate, key or valid token, or
                the key does not match the certificate.
        """
    def stats(self) -> dict[str, int]:
        """Counters: servers, clients (registered now), requests, late_replies, tls_failed
        (connections whose TLS handshake failed), open_requests (waiting for replies now)."""
    def wait_for_nodes(self, servers: int, clients: int = 0, timeout: float = 10.0) -> None:
        """Block until at least this many servers and clients are registered.

        Raises:
            ResponseTimeout: not reached within `timeout` seconds.
        """
    def close(self) -> None:
        """Stop without losing an answer: stop accepting and reading requests, answer every
        open one (as usual: every server replied, or its deadline; at most the deadline plus
        a second), then say BYE to every node, close every connection, stop. Safe to call
        twice."""
    def __enter__(self) -> "Tracker": ...
    def __exit__(self, exc_type: object, exc_value: object, traceback: object) -> bool: ...

@final
class Server:
    """A server node holding a number, answering the tracker's queries in the background."""

    def __new__(
        cls,
        name: str,
        tracker_address: str | tuple[str, int] | list[str | tuple[str, int]],
        number: int | None = None,
        *,
        token: str | None = None,
        tls: bool = False,
        tls_ca: str | os.PathLike[str] | None = None,
        reconnect: bool = True,
        reconnect_for: float | None = None,
    ) -> Server:
        """Connect to the tracker and register as `name`, holding `number` (drawn if None),
        presenting `token` if the tracker wants one. `tracker_address` may name several
        trackers of one cluster ("A:7000,B:7000", or a list): it registers with the first that
        answers. With `tls` (trusting the system's CAs)
        or `tls_ca` (a PEM file of the CAs to trust) it speaks TLS, and the tracker's
        certificate must name the host in `tracker_address`.

        When its tracker goes away (it stops, restarts, or its connection breaks) the server
        registers again under the same name and number, with capped exponential backoff
        (0.1 s doubling to 2 s), trying each tracker it was given in turn, for
        `reconnect_for` seconds each time (None: as long as it lives). `reconnect=False`
        ends it instead. A refusal after a reconnection (the name taken meanwhile) ends it.

        Raises:
            ValueError: a bad name, number or address, or a `tls_ca` that cannot be read.
            NetworkError: the tracker cannot be reached, or the TLS handshake failed (the
                message says why: an untrusted or expired certificate, a name mismatch, a
                tracker without TLS).
            RefusedError: the tracker refused (for example, the name is taken).
        """
    @property
    def name(self) -> str: ...
    @property
    def number(self) -> int: ...
    def close(self) -> None:
        """Stop answering and close the connection. Safe to call twice."""
    def __enter__(self) -> "Server": ...
    def __exit__(self, exc_type: object, exc_value: object, traceback: object) -> bool: ...

@final
class Client:
    """A client node that asks the tracker which servers hold a number."""

    def __new__(
        cls,
        name: str,
        tracker_address: str | tuple[str, int] | list[str | tuple[str, int]],
        *,
        token: str | None = None,
        tls: bool = False,
        tls_ca: str | os.PathLike[str] | None = None,
        reconnect: bool = True,
        reconnect_for: float | None = None,
    ) -> Client:
        """Connect to the tracker and register as `name`, presenting `token` if it wants one;
        over TLS with `tls` or `tls_ca`, as `Server`.

        When its tracker goes away, the next call reconnects (as `Server` does) and a call
        cut off by the loss sends its request again, once, on the new connection; calls made
        meanwhile wait for the connection. Each call keeps within its own time (the
        tracker's deadline and a half, plus a second), reconnecting included, and raises
        `ResponseTimeout` past it. `reconnect=False` makes every call after a loss raise
        `NetworkError`, as a closed connection does.

        Raises:
            ValueError: a bad name or address, or a `tls_ca` that cannot be read.
            NetworkError: the tracker cannot be reached, or the TLS handshake failed.
            RefusedError: the tracker refused (the name is taken, or the token is wrong).
        """
    @property
    def name(self) -> str: ...
    def find_match(self, number: int) -> list[str]:
        """The servers holding `number`, in index order; empty if none.

        Waits at most the tracker's deadline plus a margin. Calls from many threads share
        the connection, each with its own id, and are all in flight at once.

        Raises:
            ValueError: `number` is not from 1 to 10.
            NetworkError: the connection to the tracker is lost.
            ResponseTimeout: no answer in time.
        """
    def close(self) -> None:
        """Close the connection at once: every call still waiting raises MatchTrackerError
        (`code` None). Safe to call twice."""
    def __enter__(self) -> "Client": ...
    def __exit__(self, exc_type: object, exc_value: object, traceback: object) -> bool: ...

_Node = TypeVar("_Node", "AsyncTracker", "AsyncServer", "AsyncClient")

@final
class Opening(Generic[_Node]):
    """A node on its way, in asyncio: `await` it for the node, or enter it with `async with`,
    which closes the node on the way out."""

    def __await__(self) -> Generator[Any, None, _Node]: ...
    def __aenter__(self) -> Awaitable[_Node]: ...
    def __aexit__(self, exc_type: object, exc_value: object, traceback: object) -> Awaitable[None]: ...

@final
class AsyncTracker:
    """`Tracker` for asyncio (`matchtracker.aio.Tracker`)."""

    @staticmethod
    def start(
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 2.0,
        **options: Unpack[_TrackerOptions],
    ) -> Opening[AsyncTracker]:
        """Listen as `Tracker(...)` does; await the result, or enter it with `async with`."""
    @property
    def address(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def monitor_address(self) -> str | None: ...
    def reload(self) -> dict[str, bool]:
        """As `Tracker.reload()` (it reads a few small files, at once)."""
    def stats(self) -> dict[str, int]:
        """As `Tracker.stats()`."""
    def wait_for_nodes(self, servers: int, clients: int = 0, timeout: float = 10.0) -> Awaitable[None]:
        """Resolves once at least this many servers and clients are registered.

        Raises:
            ResponseTimeout: not reached within `timeout` seconds.
        """
    def close(self) -> Awaitable[None]:
        """As `Tracker.close()`: answer every open request, then say BYE to every node, close every
        connection, stop. Safe to call twice."""

@final
class AsyncServer:
    """`Server` for asyncio (`matchtracker.aio.Server`)."""

    @staticmethod
    def start(
        name: str,
        tracker_address: str | tuple[str, int] | list[str | tuple[str, int]],
        number: int | None = None,
        *,
        token: str | None = None,
        tls: bool = False,
        tls_ca: str | os.PathLike[str] | None = None,
        reconnect: bool = True,
        reconnect_for: float | None = None,
    ) -> Opening[AsyncServer]:
        """Register as `Server(...)` does (and register again as it does when the tracker
        goes away); await the result, or enter it with `async with`."""
    @property
    def name(self) -> str: ...
    @property
    def number(self) -> int: ...
    def close(self) -> Awaitable[None]:
        """Stop answering and close the connection. Safe to call twice."""

@final
class AsyncClient:
    """`Client` for asyncio (`matchtracker.aio.Client`)."""

    @staticmethod
    def connect(
        name: str,
        tracker_address: str | tuple[str, int] | list[str | tuple[str, int]],
        *,
        token: str | None = None,
        tls: bool = False,
        tls_ca: str | os.PathLike[str] | None = None,
        reconnect: bool = True,
        reconnect_for: float | None = None,
    ) -> Opening[AsyncClient]:
        """Register as `Client(...)` does; await the result, or enter it with `async with`.

        When its tracker goes away it reconnects as `Client` does: requests made meanwhile
        wait (each within its own time), and each request cut off by the loss is sent again,
        once, on the new connection."""
    @property
    def name(self) -> str: ...
    def find_match(self, number: int) -> Awaitable[list[str]]:
        """Resolves to the servers holding `number`, in index order. Any number may be in
        flight at once; cancelling one frees its request on the tracker.

        Raises:
            ValueError: `number` is not from 1 to 10 (at once, not when awaited).
            NetworkError, ResponseTimeout, RefusedError: as `Client.find_match`.
        """
    def close(self) -> Awaitable[None]:
        """Close the connection at once: every call still waiting raises MatchTrackerError."""
