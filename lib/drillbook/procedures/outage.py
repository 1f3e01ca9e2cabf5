"""Complete outage: nothing answers. Check in order — hosts, PostgreSQL, PgBouncer, Redis — then cold-start.

Behind the ``complete-outage`` runbook. The order matters: a host that is down explains everything
on it; PostgreSQL comes before PgBouncer (which only forwards to it) and Redis (a cache the
application can run without). The cold start starts what is down in the same order: PostgreSQL's
stopped nodes (never a fenced one: it may be an old primary), then PgBouncer, then Redis.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import DrillbookError
from ..targets import host as hosts
from ..targets.pgbouncer import PgBouncer
from ..targets.postgres import Postgres
from ..targets.redis import Redis

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


@dataclass
class Findings:
    hosts: dict[str, str] = field(default_factory=dict)  # host → "up (name)" or why not
    nodes: dict[str, str] = field(default_factory=dict)  # node → role ("down", "primary", …)
    fenced: set[str] = field(default_factory=set)
    pgbouncer: str = "not described"
    redis: str = "not described"

    @property
    def down_nodes(self) -> list[str]:
        return [n for n, role in self.nodes.items() if role == "down" and n not in self.fenced]

    def ok(self) -> bool:
        return (all(v.startswith("up") for v in self.hosts.values()) and "primary" in self.nodes.values()
                and not self.down_nodes and self.pgbouncer in ("answers", "not described", "not installed")
                and self.redis in ("answers", "not described", "not installed"))

    def describe(self) -> str:
        parts = [(f"1. host {h}: {v}", not v.startswith("up")) for h, v in self.hosts.items()]
        parts += [(f"2. PostgreSQL {n}: {role}{' (fenced: left alone)' if n in self.fenced else ''}", role == "down")
                  for n, role in self.nodes.items()]
        parts += [(f"3. PgBouncer: {self.pgbouncer}", self.pgbouncer.startswith("DOWN")),
                  (f"4. Redis: {self.redis}", self.redis.startswith("DOWN"))]
        first = next((line for line, down in parts if down), None)
        lines = [line for line, _ in parts]
        lines.append(f"START HERE: {first}" if first else
                     "everything answers: the outage is elsewhere (network, DNS, the application)")
        return "\n".join(lines)


def check(drill: Drill, pg: Postgres, bouncer: PgBouncer | None, cache: Redis | None) -> Findings:
    """Read-only, in order. Each part that cannot be reached is recorded as such, never raised."""
    found = Findings()
    for name, spec in drill.env.hosts.items():
        if spec.optional:
            continue
        try:
            found.hosts[name] = f"up ({hosts.reachable(drill.shell(name))})"
        except DrillbookError as exc:
            found.hosts[name] = f"DOWN: {exc.message}"
    for state in pg.replication.states():
        found.nodes[state.name] = state.role
        if state.fenced:
            found.fenced.add(state.name)
    if bouncer is not None:
        found.pgbouncer = "not installed" if bouncer.missing() else _answers(bouncer.round_trip)
    if cache is not None:
        ok, ping = (False, "") if cache.missing() else cache.ping()
        found.redis = "not installed" if cache.missing() else ("answers" if ok else f"DOWN: {ping}")
    return found


def _answers(fn: Any) -> str:
    try:
        fn()
        return "answers"
    except Exception as exc:  # any failure is the finding itself
        return f"DOWN: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"


def plan(found: Findings) -> list[str]:
    parts = [f"start PostgreSQL {n}" for n in found.down_nodes]
    if found.pgbouncer.startswith("DOWN"):
        parts.append("start PgBouncer")
    if found.redis.startswith("DOWN"):
        parts.append("start Redis")
    return parts


def cold_start(pg: Postgres, bouncer: PgBouncer | None, cache: Redis | None, found: Findings) -> str:
    """Start what is down, in order; stop at the first part that will not start."""
    done = []
    for node in found.down_nodes:
        pg.servers.start(node)
        done.append(f"PostgreSQL {node}")
    if bouncer is not None and found.pgbouncer.startswith("DOWN"):
        bouncer.start()
        bouncer.wait_serving(30)
        done.append("PgBouncer")
    if cache is not None and found.redis.startswith("DOWN"):
        cache.restart()
        cache.wait_answering(30)
        done.append("Redis")
    return "started " + (", ".join(done) or "nothing")
