"""Split brain: the primary cut off from its clients and its standby while it still runs.

``isolate_primary`` blocks the primary's port for everyone (``faults.network.BlockPort``, on its
host), watched by an outage bound; the ``postgres-failover`` runbook then fences the primary (at
once: it cannot stop cleanly) and promotes the standby. ``record_split_brain`` proves from what the
writer saw that no two nodes ever acknowledged writes at the same time, and counts the writes the
isolated node acknowledged after the fault (objective 0); ``check_fenced_after_heal`` shows the old
primary refuses writes once the network is back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from ..faults import Active, inject, stops
from ..faults.network import BlockPort, Endpoint, table_name
from ..measure.compute import Ack
from ..measure.load import WRITES_TABLE, Load
from ..targets.postgres import Postgres
from ..targets.postgres.results import PostgresError
from .failover import heal_pair, plan

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


@dataclass
class Isolation:
    primary: str
    address: str  # "address:port", as the writer records the node of each acknowledgement
    active: Active | None
    watch: stops.Watch | None
    at: float


def isolate_primary(drill: Drill, pg: Postgres, load: Load | None, primary: str, outage_factor: float) -> Isolation:
    """The fault: nothing reaches the primary's port or hears from it; it keeps running. Without a
    load (a dry run) the step only prints its plan."""
    node = pg.context.node(primary)
    fault = BlockPort(Endpoint(node.address, node.port), table_name(drill.project, f"isolate_{primary}"),
                      title=f"Cut the primary {primary} off from its clients and its standby")
    active = inject(drill, fault, host=node.host)
    at = load.mark("fault") if load else 0.0  # when the rules are in place: writes acknowledged before are not the isolated node's
    watch = None
    if active is not None and load is not None:
        rto = drill.env.objectives.get("rto_seconds", 30)
        watch = stops.Watch(drill, [stops.Outage(load, outage_factor, rto)], faults=[active]).start()
        drill.cleanup(watch.stop, "stop watching the stop conditions", mutating=False)
        print("stop condition: " + watch.conditions[0].describe())
    return Isolation(primary, f"{node.address}:{node.port}", active, watch, at)


def record_split_brain(drill: Drill, cut: Isolation, acks: list[Ack]) -> None:
    """From the writer's acknowledgements (the load stopped): writes the isolated node
    acknowledged after the fault, and whether two nodes ever acknowledged writes at once."""
    isolated = [a for a in acks if a.node == cut.address and a.at > cut.at]
    drill.measure("isolated_writes", len(isolated), unit="writes", objective="isolated_writes",
                  detail=f"writes {cut.primary} acknowledged after it was cut off")
    old = [a.at for a in acks if a.node == cut.address]
    new = [a.at for a in acks if a.node != cut.address]
    overlap = bool(old and new and max(old) >= min(new))
    drill.check("never two nodes acknowledging writes", not overlap,
                f"last write on {cut.primary} at +{max(old) - cut.at:.3f} s, first on the new primary at "
                f"+{min(new) - cut.at:.3f} s" if old and new else f"{len(old)} writes on the old, {len(new)} on the new")


def check_fenced_after_heal(drill: Drill, pg: Postgres, cut: Isolation) -> None:
    """Heal the partition (a step), then try to write on the old primary: it must refuse."""
    if cut.active is None:
        return
    if cut.watch is not None:
        cut.watch.stop()
    drill.step("Heal the partition", cut.active.heal, mutating=True,
               plan=f"delete the nftables table that cuts {cut.primary} off")
    try:
        with pg.connections.connect(cut.primary, timeout=5) as conn:
            conn.execute(f"INSERT INTO {WRITES_TABLE} (run, seq) VALUES ('split-brain-probe', 0)")
            conn.execute(f"DELETE FROM {WRITES_TABLE} WHERE run = 'split-brain-probe'")
        refused, detail = False, f"{cut.primary} ACCEPTED a write after the heal: two primaries"
    except (psycopg.Error, PostgresError) as exc:
        refused, detail = True, str(exc).strip().splitlines()[0][:200]
    drill.check(f"{cut.primary} refuses writes after the partition heals", refused, detail)
    drill.check(f"{cut.primary} is fenced", pg.servers.is_fenced(cut.primary))


def heal(pg: Postgres, old: str) -> str:
    """The drill's way back, whenever it stops: if it stopped between the runbook's fence and its
    promotion (no primary, the old one fenced), finish the failover first; then rebuild ``old``."""
    roles = pg.replication.roles()
    done = []
    if "primary" not in roles.values() and pg.servers.is_fenced(old):
        chosen = plan(pg, old=old)
        pg.servers.promote(chosen.new)
        done.append(f"promoted {chosen.new} ({old} was fenced and no node was primary)")
    done.append(heal_pair(pg, old))
    return "; ".join(done)
