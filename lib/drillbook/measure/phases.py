"""Latency percentiles of the load by phase: before, during and after a fault.

A drill's load records how long each successful probe (connect + ``SELECT 1``) and each
acknowledged write took. Split at the fault and at the recovery (e.g. the first write after the
fault, or a runbook's start and end), their p50/p95/p99 are the performance baseline seed users
ask for: ``before`` is the steady state, ``during`` what clients saw while it was broken,
``after`` whether the service came back as fast as it was.

Objectives: an environment may set ``p95_ms`` (every kind) or ``probe_p95_ms`` / ``write_p99_ms``
(one kind); they judge the steady phases (``before`` and ``after``), not ``during``, where a slow
answer is the fault's doing. Pure functions, tested without a database.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .compute import Ack, ProbeResult, percentiles

PHASES = ("before", "during", "after")
KINDS = ("probe", "write")
POINTS = (50, 95, 99)
STEADY_PHASES = ("before", "after")


@dataclass(frozen=True)
class Sample:
    at: float  # when the operation started, on the load's clock
    seconds: float  # how long it took


@dataclass(frozen=True)
class LatencyMeasure:
    """One percentile of one kind of operation in one phase, in milliseconds."""

    kind: str  # probe | write
    point: str  # p50 | p95 | p99
    phase: str  # before | during | after
    value_ms: float
    samples: int

    @property
    def name(self) -> str:
        return f"{self.kind}_latency_{self.point}_ms_{self.phase}"


def write_samples(acks: Sequence[Ack], latencies: Sequence[float]) -> list[Sample]:
    """The writer's acknowledged inserts (its latencies are recorded with its acks, in order)."""
    return [Sample(round(ack.at - seconds, 6), seconds) for ack, seconds in zip(acks, latencies)]


def probe_samples(probes: Sequence[ProbeResult]) -> list[Sample]:
    """The probe's successful attempts (a failed one has no latency, only an outage)."""
    return [Sample(p.started, p.ended - p.started) for p in probes if p.ok]


def phase_of(at: float, fault_at: float, recovered_at: float | None) -> str:
    """``before`` the fault, ``during`` it (until ``recovered_at``; None: never recovered), ``after``."""
    if at < fault_at:
        return "before"
    if recovered_at is None or at < recovered_at:
        return "during"
    return "after"


def split(samples: Sequence[Sample], fault_at: float, recovered_at: float | None) -> dict[str, list[float]]:
    """Durations (seconds) per phase; every phase is present, possibly empty."""
    if recovered_at is not None and recovered_at < fault_at:
        raise ValueError(f"recovery at {recovered_at} precedes the fault at {fault_at}")
    phases: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for sample in samples:
        phases[phase_of(sample.at, fault_at, recovered_at)].append(sample.seconds)
    return phases


def latency_measures(kinds: Mapping[str, Sequence[Sample]], fault_at: float,
                     recovered_at: float | None) -> list[LatencyMeasure]:
    """p50/p95/p99 in ms of each kind in each phase that has samples (kinds, then phases, then points)."""
    found = []
    for kind, samples in kinds.items():
        for phase, durations in split(samples, fault_at, recovered_at).items():
            for point, seconds in percentiles(durations, POINTS).items():
                found.append(LatencyMeasure(kind, point, phase, round(seconds * 1000, 2), len(durations)))
    return found


def objective_for(measure: LatencyMeasure, objectives: Mapping[str, float]) -> str | None:
    """The environment's objective that judges ``measure``: ``<kind>_<point>_ms``, else ``<point>_ms``;
    none for the ``during`` phase."""
    if measure.phase not in STEADY_PHASES:
        return None
    for name in (f"{measure.kind}_{measure.point}_ms", f"{measure.point}_ms"):
        if name in objectives:
            return name
    return None
