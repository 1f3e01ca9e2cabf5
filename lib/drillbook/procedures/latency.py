"""High latency: where the time of a round trip goes — network, pool wait, database.

Behind the ``postgres-high-latency`` runbook. Three measurements, each ``rounds`` times, p95 in ms:
a TCP connect to the primary (the network), ``SELECT 1`` on one direct connection (network +
database), and ``SELECT 1`` through PgBouncer on one connection (adds the pool's wait for a server).
The part that dominates names the runbook to go on with.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..measure.compute import percentiles
from ..targets.pgbouncer import PgBouncer
from ..targets.postgres import Postgres

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


@dataclass(frozen=True)
class Breakdown:
    network_ms: float
    direct_ms: float
    pooled_ms: float | None  # None without a PgBouncer
    objective_ms: float | None

    @property
    def database_ms(self) -> float:
        return max(0.0, self.direct_ms - self.network_ms)

    @property
    def pool_wait_ms(self) -> float | None:
        return None if self.pooled_ms is None else max(0.0, self.pooled_ms - self.direct_ms)

    @property
    def total_ms(self) -> float:
        return self.pooled_ms if self.pooled_ms is not None else self.direct_ms

    def culprit(self) -> str:
        parts = {"network": self.network_ms, "database": self.database_ms, "pool": self.pool_wait_ms or 0.0}
        return max(parts, key=lambda k: parts[k])

    def describe(self) -> str:
        pool = f"{self.pool_wait_ms:.2f} ms" if self.pool_wait_ms is not None else "no PgBouncer"
        over = (f"over the objective of {self.objective_ms:g} ms" if self.objective_ms is not None
                and self.total_ms > self.objective_ms else "within the objective" if self.objective_ms is not None
                else "no latency_p95_ms objective set")
        advice = {"network": "the network (or the host's load) dominates: check the path, not the database",
                  "database": "the database dominates: go on with postgres-slow-queries (top statements, locks)",
                  "pool": "waiting for a pool connection dominates: go on with postgres-pool-exhausted"}
        return "\n".join([f"p95: network (TCP connect) {self.network_ms:.2f} ms, database {self.database_ms:.2f} ms, "
                          f"pool wait {pool}; a round trip {self.total_ms:.2f} ms, {over}",
                          advice[self.culprit()]])


def _p95(fn: Callable[[], None], rounds: int) -> float:
    took = []
    for _ in range(rounds):
        started = time.monotonic()
        fn()
        took.append((time.monotonic() - started) * 1000)
    return percentiles(took, (95,))["p95"]


def measure(pg: Postgres, bouncer: PgBouncer | None, objective_ms: float | None, rounds: int = 20) -> Breakdown:
    node = pg.context.node(pg.replication.primary())

    def tcp() -> None:
        with socket.create_connection((node.address, node.port), timeout=5):
            pass

    network = _p95(tcp, rounds)
    with pg.connections.connect(node.name) as conn:
        direct = _p95(lambda: conn.execute("SELECT 1").fetchone() and None, rounds)
    pooled = None
    if bouncer is not None and not bouncer.missing():
        with bouncer.connect() as conn:
            pooled = _p95(lambda: conn.execute("SELECT 1").fetchone() and None, rounds)
    return Breakdown(round(network, 3), round(direct, 3), None if pooled is None else round(pooled, 3), objective_ms)


def record(drill: Drill, found: Breakdown) -> None:
    """Validate: the round trip's p95 against ``latency_p95_ms``."""
    drill.measure("round_trip_p95_ms", found.total_ms, unit="ms",
                  objective="latency_p95_ms" if found.objective_ms is not None else None,
                  detail=f"network {found.network_ms:.2f} ms, database {found.database_ms:.2f} ms, "
                         f"pool wait {found.pool_wait_ms if found.pool_wait_ms is not None else 'n/a'}")
