"""Steady state of a PostgreSQL service: what a drill checks before it injects a fault.

A drill that finds the service unhealthy records the checks that failed and raises ``NotSteady``:
the run ends ``error`` (nothing could be measured), not ``failed`` (measured, objective missed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from ..errors import DrillbookError
from ..measure.compute import failed_probes, probe_resolution
from ..measure.isolated import IsolatedLoad
from ..measure.load import Load
from ..measure.phases import Sample, latency_measures, objective_for, probe_samples, write_samples
from ..targets.postgres import Postgres
from ..targets.postgres.results import NodeState, PostgresError

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


class NotSteady(DrillbookError):
    """The environment is not in its steady state: injecting a fault now would prove nothing."""

    exit_code = 1
    default_hint = ("bring the environment back to its steady state first (on the lab: drillbook lab up), "
                    "then run the drill again")


@dataclass(frozen=True)
class Pair:
    """The service as the steady state found it: one primary and its streaming standbys."""

    primary: str
    standbys: tuple[str, ...]


def describe(states: Sequence[NodeState]) -> str:
    """One line per node, for the notebook's output: role, timeline, upstream, lag, fenced."""
    lines = []
    for s in states:
        text = f"{s.name} ({s.address}:{s.port}): {s.role}"
        if s.timeline is not None:
            text += f", timeline {s.timeline}"
        if s.role == "standby":
            text += f", {'streaming from port ' + str(s.upstream_port) if s.streaming else 'NOT streaming'}"
            text += f", {s.lag_bytes} bytes behind" if s.lag_bytes is not None else ""
        if s.fenced:
            text += ", FENCED"
        if s.role == "down" and s.detail:
            text += f" ({s.detail})"
        lines.append(text)
    return "\n".join(lines)


def healthy_standbys(states: Sequence[NodeState], primary: NodeState) -> list[str]:
    """Standbys that stream from ``primary`` and are not fenced: the ones that can take over."""
    return [s.name for s in states if s.role == "standby" and s.streaming and not s.fenced
            and s.upstream_port == primary.port]


def steady_state(drill: Drill, pg: Postgres, *, standby: bool = True, all_up: bool = True,
                 catch_up_seconds: float = 30.0) -> Pair:
    """Record the steady-state checks, then raise ``NotSteady`` if one failed.

    ``standby``: a streaming standby is required (failover); ``all_up``: every node must run
    (rotations must reach every node). Standbys must also catch up with the primary, so a fault
    injected next measures the failover, not replication that was already behind.
    """
    states = drill.step("Read every node's role, timeline and lag", pg.replication.states)
    print(describe(states))
    primaries = [s for s in states if s.role == "primary"]
    roles = ", ".join(f"{s.name}={s.role}" for s in states)
    failed = []
    if not drill.check("exactly one primary", len(primaries) == 1, roles):
        failed.append("exactly one primary")
    if all_up and not drill.check("every node is up", all(s.role != "down" for s in states), roles):
        failed.append("every node is up")
    ready = healthy_standbys(states, primaries[0]) if len(primaries) == 1 else []
    if standby and not drill.check("a standby streams from the primary", bool(ready),
                                   ", ".join(ready) or "no unfenced standby is streaming from the primary"):
        failed.append("a standby streams from the primary")
    if not failed:
        for name in ready:
            _check_caught_up(drill, pg, name, catch_up_seconds, failed)
    if failed:
        raise NotSteady(f"steady state not met: {'; '.join(failed)}")
    return Pair(primaries[0].name, tuple(ready))


def _check_caught_up(drill: Drill, pg: Postgres, name: str, timeout: float, failed: list[str]) -> None:
    try:
        seconds = pg.replication.wait_caught_up(name, timeout=timeout)
        drill.check(f"{name} caught up with the primary", True, f"in {seconds:.2f} s")
    except PostgresError as exc:
        drill.check(f"{name} caught up with the primary", False, exc.message)
        failed.append(f"{name} caught up")


# ----------------------------------------------------------------------------- the load under a drill
def start_load(pg: Postgres, run: str, probe_interval: float = 0.03, writer: bool = True) -> Load:
    """A sequenced writer and an availability probe through whichever node accepts writes, in a
    process of their own (the kernel also runs the runbook); returns once writes are acknowledged
    and probes pass (a fault needs a steady state)."""
    connector = pg.connections.portable_connector
    load = IsolatedLoad(writer=connector() if writer else None, probe=connector(),
                        run=run, probe_interval=probe_interval).start()
    try:
        load.wait_steady()
    except BaseException:
        load.stop()
        raise
    return load


def stop_load(pg: Postgres, load: Load) -> str:
    """Cleanup: stop the writer and the probe, and delete the run's rows when a primary answers
    (housekeeping: a drill that stopped early must not fail its cleanup for want of a primary)."""
    load.stop()
    try:
        with pg.connections.connect() as conn:
            return f"stopped; {load.purge(conn)} sequenced rows deleted"
    except Exception as exc:  # e.g. no primary right now: the rows are harmless, `lab up` keeps them
        return f"stopped; rows not deleted ({type(exc).__name__})"


def record_availability(drill: Drill, pg: Postgres, load: Load, start: str, end: str) -> None:
    """Stop the load; record what clients saw between marks ``start`` and ``end`` (e.g. while a
    backup ran): failed probe connections against ``failed_probes``, writes and failed writes."""
    load.stop()
    t0, t1 = load.marks[start], load.marks[end]
    failed = failed_probes(load.probes, t0, t1)
    probes = sum(1 for p in load.probes if t0 <= p.started <= t1)
    drill.measure("failed_probes", failed, unit="probes", objective="failed_probes",
                  detail=f"{failed} of {probes} probe connections failed between {start!r} and {end!r}")
    acked = sum(1 for a in load.acks if t0 <= a.at <= t1)
    errors = [e for at, e in (load.writer.errors if load.writer else []) if t0 <= at <= t1]
    drill.measure("writes_acknowledged", acked, unit="writes", detail=f"between {start!r} and {end!r}")
    drill.measure("probe_resolution_seconds", probe_resolution(load.probes),
                  detail="largest gap between two probes: nothing shorter can be seen")
    drill.check("no write failed meanwhile", not errors, errors[0] if errors else f"{acked} writes acknowledged")
    record_latency(drill, load, t0, t1)
    with pg.connections.connect() as conn:
        load.purge(conn)


def record_latency(drill: Drill, load: Load, fault_at: float, recovered_at: float | None) -> None:
    """Record p50/p95/p99 of successful probes and writes before, during and after the fault (ms),
    against the environment's latency objectives where it sets them (``measure.phases``)."""
    writes = write_samples(load.acks, load.writer.latencies if load.writer else [])
    record_phases(drill, {"probe": probe_samples(load.probes), "write": writes}, fault_at, recovered_at)


def record_phases(drill: Drill, kinds: Mapping[str, Sequence[Sample]], fault_at: float, recovered_at: float | None) -> None:
    """``record_latency`` for samples gathered elsewhere (e.g. the probes of every node)."""
    for m in latency_measures(kinds, fault_at, recovered_at):
        drill.measure(m.name, m.value_ms, unit="ms", objective=objective_for(m, drill.env.objectives),
                      detail=f"{m.samples} successful {m.kind}s {m.phase} the fault")
