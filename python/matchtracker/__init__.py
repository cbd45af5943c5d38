"""matchtracker: a central tracker over TCP.

Servers each hold a number from 1 to 10 and register with the tracker; clients ask the tracker
which servers hold a number; the tracker asks every server at once and answers within a
deadline. The networking runs in a Rust core; this package is its Python face.

    >>> import matchtracker
    >>> report = matchtracker.run_simulation(3, rounds=1, timeout=0.2, seed=1, quiet=True)
    >>> len(report.requests)
    3
"""

from ._core import (
    AsyncClient,
    AsyncServer,
    AsyncTracker,
    Client,
    MAX_N,
    MAX_ROUNDS,
    MAX_SECONDS,
    MatchTrackerError,
    NetworkError,
    Opening,
    RefusedError,
    Report,
    RequestRecord,
    ResponseTimeout,
    Server,
    Tracker,
    __version__,
    run_client,
    run_load,
    run_simulation,
    serve_server,
    serve_tracker,
)
from . import types  # so that `matchtracker.types` works after `import matchtracker` alone
from ._watch import watch

__all__ = [
    "AsyncClient",
    "AsyncServer",
    "AsyncTracker",
    "Client",
    "MAX_N",
    "MAX_ROUNDS",
    "MAX_SECONDS",
    "MatchTrackerError",
    "NetworkError",
    "Opening",
    "RefusedError",
    "Report",
    "RequestRecord",
    "ResponseTimeout",
    "Server",
    "Tracker",
    "__version__",
    "run_client",
    "run_load",
    "run_simulation",
    "serve_server",
    "serve_tracker",
    "watch",
]
