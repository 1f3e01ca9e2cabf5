"""The raw failover, measured on the bench's own lab: immediate stop, promote, first write, nothing else.

The floor under the failover drill's RTO: what PostgreSQL itself takes on this machine at this
moment, with the same writer (threads in this process, every 10 ms, retrying every 20 ms), the
same stop command and the same promotion as the drill and its runbook use. After each one the
old primary is rebuilt as a standby, as the drill's last step does.
"""
from __future__ import annotations

from pathlib import Path

from drillbook.config import environments
from drillbook.measure.load import Load, clock
from drillbook.procedures import failover
from drillbook.targets.postgres import Postgres


def raw_failover(root: Path) -> dict[str, float]:
    """One raw failover: {"rto_seconds": fault → first write on the new primary, "promote_seconds": …}."""
    with Postgres.from_environment(environments.load_environment("local", root), root) as pg:
        old = pg.replication.primary()
        new = pg.replication.standbys()[0]
        pg.replication.wait_caught_up(new)
        stop = failover.stop_command(pg, old)
        load = Load(writer=pg.connections.connector(), probe=None, run="bench-raw-failover").start()
        try:
            load.wait_steady()
            fault = load.mark("fault")
            pg.servers.run(old, stop, what="pg_ctl stop -m immediate", timeout=70)
            t0 = clock()
            promote = pg.servers.promote(new)
            first = load.wait_for_write_after(fault, timeout=60)
        finally:
            load.stop()
        with pg.connections.connect() as conn:
            load.purge(conn)
        pg.servers.fence(old, "raw failover (bench)")
        failover.heal_pair(pg, old)
        return {"rto_seconds": round(first.at - fault, 4), "stop_seconds": round(t0 - fault, 4),
                "promote_seconds": promote}
