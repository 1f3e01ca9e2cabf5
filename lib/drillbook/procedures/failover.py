"""Failover of a PostgreSQL service: choose, fence, promote, verify; measure it; heal the pair.

The runbook (``runbooks/postgres-failover``) plans with ``plan`` and acts with ``fence`` and
``pg.servers.promote``; the drill crashes the primary with ``crash_primary``, records RTO/RPO with
``record_outcome`` and leaves the service healthy with ``heal_pair`` (also its cleanup).
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from ..errors import DrillbookError
from ..measure.compute import Outcome, first_write_after, node_before
from ..measure.load import WRITES_TABLE, Load
from ..targets.postgres import Postgres
from ..targets.postgres.backup import table_checksums
from ..targets.postgres.conventions import parse_lsn
from ..targets.postgres.results import PostgresError
from .steady import record_latency

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


class FailoverRefused(DrillbookError):
    """The service is not in a state this failover can act on safely."""

    exit_code = 1


@dataclass(frozen=True)
class FailoverPlan:
    old: str  # the primary to fence
    new: str  # the standby to promote
    switchover: bool  # the old primary still runs: a planned switchover, not a lost primary
    roles: dict[str, str]

    def describe(self) -> str:
        roles = ", ".join(f"{n}={r}" for n, r in self.roles.items())
        how = "planned switchover: it still runs and is stopped cleanly" if self.switchover else "it is down"
        return f"roles now: {roles}\nplan: fence {self.old} ({how}), then promote {self.new}"


# ----------------------------------------------------------------------------- choosing (pure)
def choose(roles: Mapping[str, str], fenced: set[str], replayed: Mapping[str, int],
           old: str | None = None, new: str | None = None) -> tuple[str, str]:
    """(old primary, standby to promote) from the nodes' roles, fence markers and replay positions.

    Refuses a split brain, a re-run after a finished failover (no standby left to promote) and a
    fenced standby; prefers the standby that has replayed the most WAL (the least data lost).
    """
    primaries = [n for n, r in roles.items() if r == "primary"]
    if len(primaries) > 1:
        raise FailoverRefused(f"{len(primaries)} nodes accept writes ({', '.join(primaries)}): split brain",
                              "fence all but the newest primary and rebuild them (on the lab: drillbook lab up)")
    old = old or _old_primary(roles, primaries)
    if old not in roles:
        raise FailoverRefused(f"no node named {old!r}", f"nodes: {', '.join(roles)}")
    if roles[old] == "standby":
        raise FailoverRefused(f"{old} is a standby, not the primary", "leave old_primary unset to find the primary")
    candidates = [n for n, r in roles.items() if r == "standby" and n != old and n not in fenced]
    if new is not None and new not in candidates:
        raise FailoverRefused(f"{new} cannot be promoted: it is not a running, unfenced standby",
                              f"candidates: {', '.join(candidates) or 'none'}")
    if not candidates:
        raise FailoverRefused(f"no standby can take over from {old} (roles: {_roles(roles)})",
                              "if the failover already happened, rebuild the old primary as a standby next "
                              "(on the lab: drillbook lab up); otherwise start or rebuild a standby first")
    return old, new or max(candidates, key=lambda n: (replayed.get(n, 0), -list(roles).index(n)))


def _old_primary(roles: Mapping[str, str], primaries: list[str]) -> str:
    if primaries:
        return primaries[0]
    down = [n for n, r in roles.items() if r == "down"]
    if len(down) == 1:
        return down[0]
    if not down:
        raise FailoverRefused(f"no primary, and no node is down (roles: {_roles(roles)})",
                              "check the nodes by hand: this is not a lost primary")
    raise FailoverRefused(f"no primary and {len(down)} nodes are down ({', '.join(down)})",
                          "say which was the primary: old_primary='NAME'")


def _roles(roles: Mapping[str, str]) -> str:
    return ", ".join(f"{n}={r}" for n, r in roles.items())


# ----------------------------------------------------------------------------- the runbook's steps
def plan(pg: Postgres, old: str | None = None, new: str | None = None) -> FailoverPlan:
    """Read roles, fence markers and replay positions, then ``choose``."""
    roles = pg.replication.roles()
    fenced = {n for n in roles if roles[n] != "primary" and pg.servers.is_fenced(n)}
    replayed = {n: _replayed(pg, n) for n, r in roles.items() if r == "standby"}
    old_node, new_node = choose(roles, fenced, replayed, old, new)
    return FailoverPlan(old_node, new_node, roles[old_node] == "primary", dict(roles))


def _replayed(pg: Postgres, node: str) -> int:
    lsn = pg.connections.query(node, "SELECT pg_last_wal_replay_lsn()::text")[0][0]
    return parse_lsn(lsn) if lsn else 0


def data_at_risk(pg: Postgres, chosen: FailoverPlan) -> str:
    """What a promotion now would lose, in words for the incident channel."""
    if chosen.switchover:
        lag = pg.replication.lag(chosen.new)
        return (f"{chosen.new} is {lag.bytes} bytes behind {chosen.old}; a clean stop of {chosen.old} "
                f"sends it the rest, so a switchover loses nothing")
    row = pg.connections.query(chosen.new, "SELECT pg_last_wal_receive_lsn()::text, "
                                           "extract(epoch FROM now() - pg_last_xact_replay_timestamp())")[0]
    age = f"{float(row[1]):.1f} s ago" if row[1] is not None else "never (no transaction yet)"
    return (f"{chosen.old} is down: writes it acknowledged after WAL position {row[0]} (the last {chosen.new} "
            f"received) are lost; {chosen.new} last replayed a transaction {age}")


def fence(pg: Postgres, node: str, clean_stop: bool = True) -> str:
    """Stop ``node`` (cleanly if it still runs, so its standbys receive all of its WAL) and fence
    it: if it is ever started again it stays read-only, so there can never be two primaries.

    ``clean_stop=False``: a primary that runs but cannot be reached (partitioned, hung) is stopped
    at once; a clean stop would wait for WAL senders that cannot deliver."""
    clean = False
    if clean_stop and pg.servers.is_running(node):
        try:
            clean = pg.servers.stop(node, "fast", timeout=30)
        except PostgresError:
            clean = False  # fence() below stops it immediately
    pg.servers.fence(node, "fenced by the postgres-failover runbook")
    return "stopped cleanly, then fenced" if clean else "fenced (it was not running cleanly)"


def verify_write(pg: Postgres, tag: str) -> str:
    """Write one row as the application through whichever node accepts writes, read it back on a
    new connection, delete it. Proves what clients need: a primary that commits."""
    with pg.connections.connect() as conn:
        node = f"{conn.info.host}:{conn.info.port}"
        conn.execute(f"INSERT INTO {WRITES_TABLE} (run, seq) VALUES (%s, 0)", (tag,))
    with pg.connections.connect() as conn:
        found = conn.execute(f"SELECT count(*) FROM {WRITES_TABLE} WHERE run = %s", (tag,)).fetchone()[0]
        conn.execute(f"DELETE FROM {WRITES_TABLE} WHERE run = %s", (tag,))
    if found != 1:
        raise PostgresError(f"a write acknowledged by {node} was not read back ({found} rows)",
                            "check which node clients reach: there may be two primaries")
    return f"write committed by {node} and read back"


# ----------------------------------------------------------------------------- the drill's steps
def crash_primary(pg: Postgres, node: str, load: Load, then: Callable[[], None] | None = None) -> str:
    """The fault: mark the time on the load's clock, then stop ``node`` immediately (a crash: no
    checkpoint, clients and standbys cut off); ``then`` at once (e.g. release the held runbook)."""
    stop = stop_command(pg, node)  # found before the clock starts: the fault is the stop alone
    load.mark("fault")
    pg.servers.run(node, stop, what="pg_ctl stop -m immediate", timeout=70)
    if then is not None:
        then()
    return f"{node} stopped immediately"


def stop_command(pg: Postgres, node: str) -> str:
    """``pg_ctl stop -m immediate`` of a running node (a crash), as a script for ``servers.run``."""
    if not pg.servers.is_running(node):
        raise PostgresError(f"{pg.context.name}/{node} is not running: there is nothing to crash")
    return f"{pg.servers.tool_path(node, 'pg_ctl')} stop -D {shlex.quote(pg.context.data_dir(node))} -m immediate -w -t 60"


def record_outcome(drill: Drill, pg: Postgres, load: Load, timeout: float = 60.0) -> Outcome:
    """Wait for the first write on the new primary, stop the load, record RTO, RPO and the probes."""
    fault = load.marks["fault"]
    load.wait_for_write_after(fault, timeout=timeout)
    time.sleep(0.2)  # a few more writes and probes on the new primary, so the outage's end is seen
    load.stop()
    with pg.connections.connect() as conn:
        outcome = load.outcome(fault, conn)
        load.purge(conn)  # the measures are recorded; the lab stays small
    _record(drill, outcome)
    first = first_write_after(load.acks, fault, not_on=node_before(load.acks, fault))
    record_latency(drill, load, fault, first.at if first else None)
    return outcome


def _record(drill: Drill, o: Outcome) -> None:
    drill.check("a new primary acknowledged writes after the fault", o.rto_seconds is not None,
                f"first write after the fault on {o.new_node}")
    if o.rto_seconds is not None:
        drill.measure("rto_seconds", o.rto_seconds, objective="rto_seconds",
                      detail=f"fault → first write acknowledged by {o.new_node} (writer retries every 20 ms)")
    drill.measure("rpo_seconds", o.rpo_seconds, objective="rpo_seconds",
                  detail=f"{o.rpo_writes} acknowledged write(s) of {o.writes} missing afterwards")
    drill.measure("rpo_writes", o.rpo_writes, unit="writes", detail="acknowledged writes missing afterwards")
    drill.measure("failed_probes", o.failed_probes, unit="probes",
                  detail=f"of {o.probes} probes; expected during a failover (no objective here)")
    drill.measure("longest_outage_seconds", o.longest_outage_seconds,
                  detail="first failed probe → next passing probe")
    drill.measure("probe_resolution_seconds", o.probe_resolution_seconds,
                  detail="largest gap between two probes: nothing shorter can be seen")
    for name, value in o.write_latency_ms.items():
        drill.measure(f"write_latency_{name}_ms", value, unit="ms", detail="steady-state inserts, whole run")


def check_failed_over(drill: Drill, pg: Postgres, old: str) -> str | None:
    """After the runbook: one primary that is not ``old``, and ``old`` fenced. Returns the new primary."""
    roles = pg.replication.roles()
    primaries = [n for n, r in roles.items() if r == "primary"]
    moved = len(primaries) == 1 and primaries[0] != old
    drill.check("one primary, and it is not the crashed node", moved, _roles(roles))
    drill.check(f"{old} is fenced (it cannot come back as a second primary)", pg.servers.is_fenced(old))
    return primaries[0] if moved else None


def heal_pair(pg: Postgres, old: str) -> str:
    """One primary again and every other node a streaming standby of it (the failover drill's
    cleanup, and its last step): restart ``old`` if no failover happened, else rebuild it."""
    primaries = [n for n, r in pg.replication.roles().items() if r == "primary"]
    done = []
    if not primaries:
        if pg.servers.is_fenced(old):
            raise PostgresError(f"no primary, and {old} is fenced", "promote a standby with the postgres-failover "
                                "runbook (on the lab: drillbook lab up)")
        pg.servers.start(old)
        done.append(f"restarted {old} (no failover happened)")
        primaries = [n for n, r in pg.replication.roles().items() if r == "primary"]
    if len(primaries) != 1:
        raise PostgresError(f"cannot heal the pair: primaries {primaries or 'none'}",
                            "on the lab: drillbook lab up; elsewhere fence all but the newest primary")
    for name in pg.context.node_names:
        if name != primaries[0] and not _streams_from(pg, name, primaries[0]):
            how = pg.replication.rebuild_standby(name, primaries[0])
            done.append(f"rebuilt {name} as a standby of {primaries[0]} ({how})")
    return "; ".join(done) or "the pair was healthy"


def _streams_from(pg: Postgres, name: str, primary: str) -> bool:
    state = pg.replication.state(name)
    if state.role != "standby" or state.fenced:
        return False
    try:  # a standby whose primary just restarted reconnects within a few seconds
        return pg.replication.wait_streaming(name, timeout=10) == pg.context.node(primary).port
    except PostgresError:
        return False


def check_pair_healthy(drill: Drill, pg: Postgres) -> None:
    """After the rebuild: one primary, every other node streaming from it with the same data."""
    states = pg.replication.states()
    primaries = [s for s in states if s.role == "primary"]
    others = [s for s in states if s.role != "primary"]
    ok = len(primaries) == 1 and all(s.role == "standby" and s.streaming and not s.fenced for s in others)
    drill.check("pair healthy again: one primary, the other nodes streaming standbys", ok,
                ", ".join(f"{s.name}={s.role}" for s in states))
    if not ok:
        return
    with pg.connections.connect(primaries[0].name, login="admin", dbname=pg.context.service.database) as conn:
        source = table_checksums(conn)
    for s in others:
        pg.replication.wait_caught_up(s.name)
        with pg.connections.connect(s.name, login="admin", dbname=pg.context.service.database) as conn:
            same = table_checksums(conn) == source
        drill.check(f"{s.name} holds the same data as {primaries[0].name}", same,
                    f"row counts and checksums of {len(source)} tables")
