"""Network partitions of a PostgreSQL pair: the drills' side (the runbooks diagnose and recover).

``cut_standby`` partitions a standby from its primary with ``faults.network`` (on the primary's
host: the standby's processes, told apart by their OS user, cannot reach the primary's port; the
application's connections go on), guarded by stop conditions. ``heal_and_catch_up`` ends the
partition and measures how long the standby takes to replay what it missed; ``record_detection``
measures when the runbook's diagnosis named the cause.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..faults import Active, inject, stops
from ..faults.network import Endpoint, Partition, table_name
from ..journal import parse_iso
from ..measure.compute import failed_probes
from ..measure.load import Load
from ..targets.postgres import Postgres
from ..targets.postgres.results import PostgresError
from .lag import DISCONNECTED, SILENT

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


@dataclass
class Cut:
    """A partition in progress: the fault, its stop conditions, and when it began (both clocks)."""

    standby: str
    primary: str
    active: Active | None
    watch: stops.Watch | None
    at: float  # the load's clock (monotonic)
    wall: float  # time.time(), to compare with a runbook's journal


def standby_fault(pg: Postgres, standby: str, primary: str, project: Any) -> Partition:
    """The partition: processes of the standby's data owner cannot reach the primary's port."""
    node, source = pg.context.node(standby), pg.context.node(primary)
    owner = pg.servers.owner(standby)
    return Partition(Endpoint(node.address, user=owner), Endpoint(source.address, source.port),
                     table_name(project, f"cut_{standby}"),
                     title=f"Partition {standby} from the primary {primary}")


def cut_standby(drill: Drill, pg: Postgres, load: Load | None, standby: str, primary: str, *,
                max_lag_bytes: int, probe_failing_seconds: float) -> Cut:
    """Inject the partition (gate ``fault``) and watch its stop conditions: the application's
    probes failing (it must not notice) and the standby's lag (it must stay within reach)."""
    fault = standby_fault(pg, standby, primary, drill.project)
    active = inject(drill, fault, host=pg.context.node(primary).host)
    at, wall = (load.mark("fault") if load else time.monotonic()), time.time()  # the rules are in place now
    watch = None
    if active is not None and load is not None:
        conditions = [stops.ProbesFailing(load, probe_failing_seconds),
                      stops.LagAbove(lambda: pg.replication.lag(standby).bytes, max_lag_bytes, standby)]
        watch = stops.Watch(drill, conditions, faults=[active]).start()
        drill.cleanup(watch.stop, "stop watching the stop conditions", mutating=False)
        print("stop conditions: " + "; ".join(c.describe() for c in conditions))
    return Cut(standby, primary, active, watch, at, wall)


def heal_and_catch_up(drill: Drill, pg: Postgres, cut: Cut, load: Load | None, timeout: float = 120.0) -> None:
    """Heal the partition (a step), then measure the lag it left and the time to catch up."""
    if cut.active is None:
        return
    if cut.watch is not None:
        cut.watch.stop()  # the bound no longer applies: the drill ends the fault itself now
    lag = pg.replication.lag(cut.standby).bytes
    drill.step("Heal the partition", cut.active.heal, mutating=True,
               plan=f"delete the nftables table that keeps {cut.standby} from {cut.primary}")
    healed = load.mark("heal") if load else time.monotonic()
    drill.measure("lag_at_heal_bytes", lag, unit="bytes", detail=f"WAL {cut.standby} had not replayed when the partition ended")
    drill.measure("partition_seconds", round(healed - cut.at, 3), detail="fault → heal")
    try:
        seconds = drill.step(f"Wait until {cut.standby} has caught up",
                             lambda: pg.replication.wait_caught_up(cut.standby, timeout=timeout))
    except PostgresError as exc:
        drill.check(f"{cut.standby} caught up after the partition", False, exc.message)
        return
    drill.measure("catch_up_seconds", float(seconds), objective="catch_up_seconds",
                  detail=f"heal → {cut.standby} replayed everything {cut.primary} had written at the heal")


def record_detection(drill: Drill, cut: Cut, child: dict[str, Any], step: str = "Diagnose") -> None:
    """Time to detect: fault → the end of the runbook's diagnosis step (its journal's wall clock)."""
    for entry in child["steps"]:
        if entry["title"].startswith(step) and entry["status"] == "passed" and entry.get("ended_at"):
            seconds = parse_iso(entry["ended_at"]).timestamp() - cut.wall
            detail = entry.get("detail", "")
            drill.measure("detect_seconds", round(seconds, 3), objective="detect_seconds",
                          detail=f"fault → {child['name']} named the cause: {detail[:200]}")
            drill.check("the runbook named a broken link", any(c in detail for c in (SILENT, DISCONNECTED)), detail)
            return
    drill.check("the runbook diagnosed the lag", False, f"no passed step starting with {step!r} in {child['name']}")


def record_clients(drill: Drill, load: Load, start: str = "fault", end: str = "heal") -> None:
    """What the application saw while the standby was cut off: it must not have noticed."""
    load.stop()
    t0, t1 = load.marks[start], load.marks.get(end, load.marks["stop"])
    failed = failed_probes(load.probes, t0, t1)
    probes = sum(1 for p in load.probes if t0 <= p.started <= t1)
    drill.measure("failed_probes", failed, unit="probes", objective="failed_probes",
                  detail=f"{failed} of {probes} probe connections to the primary failed during the partition")
    acked = sum(1 for a in load.acks if t0 <= a.at <= t1)
    errors = [e for at, e in (load.writer.errors if load.writer else []) if t0 <= at <= t1]
    drill.measure("writes_acknowledged", acked, unit="writes", detail="by the primary during the partition")
    drill.check("the primary accepted every write during the partition", not errors and acked > 0,
                errors[0] if errors else f"{acked} writes acknowledged")
