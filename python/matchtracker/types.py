"""Types for annotations: the protocol's error codes and the dicts the package returns.

They exist for type checkers and readers; at run time they are plain `str` and `dict`.
"""

from __future__ import annotations

from typing import Any, Dict, Literal, Optional, TypedDict

__all__ = ["ErrorCode", "Event", "Totals"]

ErrorCode = Literal[
    "line-too-long",
    "not-utf8",
    "empty-line",
    "unknown-verb",
    "bad-fields",
    "bad-number",
    "bad-id",
    "bad-name",
    "bad-word",
    "bad-token",
    "not-registered",
    "unauthorized",
    "name-taken",
    "unexpected",
    "not-asked",
    "unknown-request",
    "handshake-timeout",
    "tls-required",
    "line-timeout",
    "slow-consumer",
    "too-many-connections",
    "internal",
]
"""The codes of the protocol's ERROR lines (docs/PROTOCOL.md, "Errors and limits"), as
`MatchTrackerError.code` carries them."""


class Totals(TypedDict):
    """The figures a summary starts with (`Report.totals()`)."""

    requests: int
    matched: int
    no_match: int
    incomplete: int
    """Answers that differ from the servers holding the number."""
    late_replies: int
    latency_p50: float
    """Seconds."""
    latency_p99: float
    """Seconds."""
    duration: float
    startup: float
    closing: float


# "from" is a keyword, so an event's TypedDict is made the functional way.
Event = TypedDict(
    "Event",
    {"time": float, "from": str, "to": Optional[str], "kind": str, "fields": Dict[str, Any]},
)
"""One event of a run (`Report.events`, and each line of `--json`): seconds from the start,
the sender (or the node a note is about), the receiver (None for a note), the kind (such as
"query.sent") and the kind's fields."""
