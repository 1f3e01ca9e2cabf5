"""The connection pool is exhausted: who holds PgBouncer's server connections, and freeing them.

Behind the ``postgres-pool-exhausted`` runbook and the ``pool-exhausted`` drill. Diagnosis reads
SHOW POOLS (clients waiting, servers in use) and ``pg_stat_activity`` on the primary (sessions
idle in a transaction, or running for long); resolution terminates those holders and/or raises
the pool size with a RELOAD; validation is a new connection served through the pool.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import psycopg

from ..targets.pgbouncer import PgBouncer, Pool
from ..targets.postgres import Postgres

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only

HOLDERS = """
SELECT pid, usename, state, coalesce(application_name, ''), client_addr::text,
       round(extract(epoch FROM now() - coalesce(xact_start, query_start)))::int AS seconds, left(query, 120)
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = %s
   AND ((state LIKE 'idle in transaction%%' AND now() - state_change > make_interval(secs => %s))
        OR (state = 'active' AND now() - query_start > make_interval(secs => %s)))
 ORDER BY seconds DESC
"""


@dataclass(frozen=True)
class Holder:
    """A session holding a server connection (and maybe locks) without doing useful work."""

    pid: int
    user: str
    state: str
    application: str
    client: str
    seconds: int
    query: str

    def line(self) -> str:
        return f"pid {self.pid} {self.user} {self.state} for {self.seconds} s: {self.query!r}"


def applicable(bouncer: PgBouncer | None) -> str | None:
    """Why the PgBouncer parts do not apply here (no PgBouncer described, or not installed), or None."""
    if bouncer is None:
        return "the environment describes no pgbouncer service"
    return bouncer.missing()


def forwards_to_primary(pg: Postgres, bouncer: PgBouncer) -> tuple[bool, str]:
    """Does PgBouncer forward to the primary? After a failover it may still point at the old one."""
    host, port = bouncer.backend()
    primary = pg.context.node(pg.replication.primary())
    ok = (host, port) == (primary.address, primary.port)
    return ok, f"forwards to {host}:{port}; the primary is {primary.name} at {primary.address}:{primary.port}"


def repoint(pg: Postgres, bouncer: PgBouncer) -> str:
    primary = pg.context.node(pg.replication.primary())
    return bouncer.point_at(primary.address, primary.port)


def describe_pools(pools: Sequence[Pool], size: int) -> str:
    if not pools:
        return f"no pool has been used yet (default_pool_size {size})"
    lines = [f"{p.database}/{p.user} ({p.mode}): clients active {p.cl_active}, waiting {p.cl_waiting}; "
             f"servers active {p.sv_active}, idle {p.sv_idle} of {size}; longest wait {p.maxwait:.1f} s" for p in pools]
    waiting = sum(p.cl_waiting for p in pools)
    meaning = (f"EXHAUSTED: {waiting} client(s) wait for a server connection; every one of the pool's servers is "
               "held by a client (look at the holders below)" if waiting else
               "no client waits: the pool has room (if clients still fail, look at PostgreSQL and the network)")
    return "\n".join(lines + [meaning])


def holders(pg: Postgres, idle_seconds: float, active_seconds: float) -> list[Holder]:
    """Sessions on the primary idle in a transaction longer than ``idle_seconds``, or active longer
    than ``active_seconds``: they keep a server connection of the pool (and their locks)."""
    primary = pg.replication.primary()
    with pg.connections.connect(primary, login="admin") as conn:
        rows = conn.execute(HOLDERS, (pg.context.service.database, idle_seconds, active_seconds)).fetchall()
    return [Holder(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4] or "local"), int(r[5] or 0), str(r[6] or ""))
            for r in rows]


def describe_holders(found: Sequence[Holder], max_connections: int | None = None) -> str:
    if not found:
        return ("no session is idle in a transaction or running long: the holders are gone, "
                "or the pool is simply too small")
    lines = [h.line() for h in found]
    lines.append(f"{len(found)} session(s) hold server connections while doing nothing useful: terminating them frees "
                 "the pool (their transactions roll back)")
    return "\n".join(lines)


def terminate(pg: Postgres, pids: Sequence[int]) -> str:
    """``pg_terminate_backend`` each pid on the primary; which ones ended."""
    if not pids:
        return "nothing to terminate"
    primary = pg.replication.primary()
    with pg.connections.connect(primary, login="admin") as conn:
        done = [pid for pid in pids if conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]]
    return f"terminated {len(done)} of {len(pids)}: {', '.join(map(str, done)) or 'none'}"


def check_served(drill: Drill, bouncer: PgBouncer, timeout: float = 30.0) -> float | None:
    """Validate: a new connection through the pool is served; and nobody waits any more."""
    try:
        took = bouncer.wait_serving(timeout)
    except Exception as exc:  # a failed validation is a failed check, never an error of the runbook
        drill.check("a new connection through the pool is served", False, str(exc))
        return None
    drill.check("a new connection through the pool is served", True, f"within {took:.2f} s")
    waiting = sum(p.cl_waiting for p in bouncer.pools())
    drill.check("no client waits for a server connection", waiting == 0, f"{waiting} waiting")
    return took


# ----------------------------------------------------------------------------- the fault (drill)
class Hoarders:
    """``count`` clients through PgBouncer that open a transaction and then sit idle in it:
    in transaction pooling each keeps one server connection, so ``pool size`` of them exhaust it."""

    def __init__(self, bouncer: PgBouncer, count: int) -> None:
        self.bouncer, self.count = bouncer, count
        self.conns: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def start(self) -> str:
        for _ in range(self.count):
            conn = self.bouncer.connect()
            conn.execute("BEGIN")
            conn.execute("SELECT 1")  # now the server connection is the transaction's until it ends
            with self._lock:
                self.conns.append(conn)
        return f"{self.count} clients idle in a transaction through {self.bouncer.name}"

    def close(self) -> str:
        with self._lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            try:
                conn.close()
            except psycopg.Error:
                pass
        return f"closed {len(conns)} hoarding clients"

