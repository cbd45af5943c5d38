"""The end-of-run summary of a report: totals, latency, wall time, then per server and per
client. Printed after the transcript, and alone under --quiet."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._core import Report

# Runs larger than this list the first nodes only, and say how many more there are.
MAX_LISTED = 20


def index_key(name: str) -> tuple[str, int]:
    """S2 before S10: the name without its trailing digits, then their number."""
    stem = name.rstrip("0123456789")
    digits = name[len(stem):]
    return stem, int(digits) if digits else 0


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[round((len(sorted_values) - 1) * q)]


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def totals(report: Report) -> dict:
    """The numbers the summary's first lines give, also for tests and JSON users."""
    requests = report.requests
    latencies = sorted(r.elapsed for r in requests)
    matched = sum(1 for r in requests if r.servers)
    return {
        "requests": len(requests),
        "matched": matched,
        "no_match": len(requests) - matched,
        "late_replies": report.late_replies,
        "latency_p50": quantile(latencies, 0.50),
        "latency_p99": quantile(latencies, 0.99),
        "duration": report.duration,
    }


def summary(report: Report) -> str:
    t = totals(report)
    mode = ", early" if report.early else ""
    lines = [
        f"Summary: n={report.n}, {plural(report.rounds, 'round')}, {t['requests']} requests: "
        f"{t['matched']} matched, {t['no_match']} no match, {t['late_replies']} late replies; "
        f"{t['duration']:.2f} s",
        f"  deadline {report.timeout:g} s{mode}; latency p50 {t['latency_p50'] * 1e3:.1f} ms, "
        f"p99 {t['latency_p99'] * 1e3:.1f} ms",
    ]
    matches: dict[str, int] = {name: 0 for name in report.numbers}
    asked: dict[str, list[str]] = {}
    for r in report.requests:
        for server in r.servers:
            matches[server] += 1
        answer = ", ".join(r.servers) if r.servers else "none"
        asked.setdefault(r.client, []).append(f"{r.number} → {answer}")

    servers = sorted(report.numbers, key=index_key)
    lines.append("  servers:")
    for name in servers[:MAX_LISTED]:
        lines.append(f"    {name:<6} number {report.numbers[name]:>2}, matched {plural(matches[name], 'request')}")
    if len(servers) > MAX_LISTED:
        lines.append(f"    ... and {len(servers) - MAX_LISTED} more")
    clients = sorted(asked, key=index_key)
    lines.append("  clients (number asked → servers that matched):")
    for name in clients[:MAX_LISTED]:
        lines.append(f"    {name:<6} " + "; ".join(asked[name]))
    if len(clients) > MAX_LISTED:
        lines.append(f"    ... and {len(clients) - MAX_LISTED} more")
    return "\n".join(lines)
