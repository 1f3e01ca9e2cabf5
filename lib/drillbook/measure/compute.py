"""The measures of a recovery, computed from recorded data: RTO, RPO, failed probes, outages, percentiles.

* RTO = fault → first write acknowledged by another node than the one before the fault.
* RPO = acknowledged writes missing afterwards: how many, and seconds from the first missing one
  to the fault.
* Failed probes: attempts that failed (in a window, e.g. around a rotation); the longest outage;
  the probes' resolution (the largest gap between two of them).

Plain functions over the writer's acknowledgements (``Ack``) and the probe's attempts
(``ProbeResult``), tested without a database.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Ack:
    seq: int
    at: float  # clock() when the commit was acknowledged
    node: str  # "address:port" of the server that acknowledged it


@dataclass(frozen=True)
class ProbeResult:
    started: float
    ended: float
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class Rpo:
    writes: int  # acknowledged writes missing afterwards
    seconds: float  # from the first missing write to the fault (0 when nothing is missing)
    missing: tuple[int, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What a drill records about a fault: measures to compare with the environment's objectives."""

    rto_seconds: float | None  # None: no write was acknowledged after the fault
    rpo_writes: int
    rpo_seconds: float
    failed_probes: int
    longest_outage_seconds: float
    probes: int
    writes: int
    probe_resolution_seconds: float  # the largest gap between two probes: the measures' granularity
    new_node: str | None
    write_latency_ms: dict[str, float] = field(default_factory=dict)



def node_before(acks: Sequence[Ack], at: float) -> str | None:
    """The node that acknowledged the last write before ``at``."""
    before = [a for a in acks if a.at <= at]
    return before[-1].node if before else None


def first_write_after(acks: Sequence[Ack], at: float, not_on: str | None = None) -> Ack | None:
    """The first write acknowledged after ``at`` (by a node other than ``not_on``, if given)."""
    for ack in acks:
        if ack.at > at and (not_on is None or ack.node != not_on):
            return ack
    return None


def rto(acks: Sequence[Ack], fault_at: float, old_node: str | None = None) -> float | None:
    """Seconds from the fault to the first write acknowledged by the new primary.

    ``old_node`` defaults to the node that acknowledged the last write before the fault: a write
    the old primary still acknowledged after the fault was marked does not count as recovery.
    """
    old = old_node if old_node is not None else node_before(acks, fault_at)
    first = first_write_after(acks, fault_at, not_on=old)
    return None if first is None else round(first.at - fault_at, 4)


def rpo(acks: Iterable[Ack], present: set[int], fault_at: float) -> Rpo:
    """Acknowledged writes that are not ``present`` afterwards: how many, and how far before the fault."""
    missing = [a for a in acks if a.seq not in present]
    if not missing:
        return Rpo(0, 0.0)
    first = min(missing, key=lambda a: a.at)
    return Rpo(len(missing), round(max(0.0, fault_at - first.at), 4), tuple(a.seq for a in missing))


def failed_probes(probes: Iterable[ProbeResult], start: float | None = None, end: float | None = None) -> int:
    """Failed probe attempts that started within [start, end] (the whole run by default)."""
    return sum(1 for p in probes if not p.ok and (start is None or p.started >= start)
               and (end is None or p.started <= end))


def longest_outage(probes: Sequence[ProbeResult]) -> float:
    """The longest stretch from a failed probe's start to the next passing probe's end."""
    longest, since = 0.0, None
    for p in probes:
        if not p.ok and since is None:
            since = p.started
        elif p.ok and since is not None:
            longest = max(longest, p.ended - since)
            since = None
    if since is not None and probes:
        longest = max(longest, probes[-1].ended - since)
    return round(longest, 4)


def probe_resolution(probes: Sequence[ProbeResult]) -> float:
    """The largest gap between the starts of consecutive probes: nothing shorter can be seen."""
    starts = [p.started for p in probes]
    return round(max((b - a for a, b in zip(starts, starts[1:])), default=0.0), 4)


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles, e.g. {"p50": …, "p95": …, "p99": …}; empty input gives {}."""
    if not values:
        return {}
    ordered = sorted(values)
    result = {}
    for point in points:
        rank = max(1, -(-point * len(ordered) // 100))  # ceil(p/100 · n), at least the first
        result[f"p{point}"] = round(ordered[rank - 1], 4)
    return result
