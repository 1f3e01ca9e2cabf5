"""Cold start of a PostgreSQL service after every node went down at once (a power loss).

The runbook (``runbooks/postgres-cold-start``) reads what each node's disk holds (``wal_on_disk``:
its newest timeline and where its WAL ends, from ``pg_controldata``, the timeline history and
``pg_waldump``), chooses the node with the most WAL as the primary (``choose_primary``), turns
every other node into a standby *before* anything starts (so there can never be two primaries),
starts the primary, then its standbys (``start_standby``: stream, else rewind or re-clone). The
drill stops every node at once (``power_loss``) and measures the time to the first write.
"""
from __future__ import annotations

import re
import shlex
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from ..errors import DrillbookError
from ..measure.load import Load
from ..targets.postgres import Postgres
from ..targets.postgres.conventions import FENCE_MARKER, parse_lsn
from ..targets.postgres.results import PostgresError
from .failover import stop_command
from .steady import record_latency

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only

LSN = re.compile(r"\bat ([0-9A-F]+/[0-9A-F]+)")


class ColdStartRefused(DrillbookError):
    """The service is not in a state a cold start can act on safely."""

    exit_code = 1


@dataclass(frozen=True)
class WalFacts:
    """What one node's data directory holds, read while it is down."""

    name: str
    running: str  # its role if it runs (primary, standby), else "down"
    initialized: bool
    standby: bool  # standby.signal: it was a standby when it stopped
    fenced: bool
    timeline: int
    end_lsn: int  # where its WAL ends (0: unknown)

    def describe(self) -> str:
        if not self.initialized:
            return f"{self.name}: no data directory"
        what = "running as " + self.running if self.running != "down" else ("a standby" if self.standby else "a primary")
        end = f"{self.end_lsn >> 32:X}/{self.end_lsn & 0xFFFFFFFF:X}"
        return f"{self.name}: {what}, timeline {self.timeline}, WAL ends at {end}" + (", FENCED" if self.fenced else "")


# ----------------------------------------------------------------------------- choosing (pure)
def wal_end(waldump_output: str, fallback: int) -> int:
    """Where pg_waldump stopped reading (the first invalid record: the end of the WAL written), else ``fallback``."""
    found = LSN.findall(waldump_output)
    return max([parse_lsn(found[-1]), fallback]) if found else fallback


def switch_point(history: str) -> int:
    """The LSN where the newest timeline of a ``.history`` file began (0 without one)."""
    points = [parse_lsn(f[1]) for f in (line.split("\t") for line in history.splitlines()) if len(f) >= 2 and "/" in f[1]]
    return points[-1] if points else 0


def choose_primary(facts: Sequence[WalFacts]) -> str:
    """The node to start as the primary: a running primary if there is one, else the unfenced node
    with the newest timeline and the most WAL (a former primary wins a tie: it needs no promotion)."""
    primaries = [f.name for f in facts if f.running == "primary"]
    if len(primaries) > 1:
        raise ColdStartRefused(f"{len(primaries)} nodes run as primaries ({', '.join(primaries)}): split brain",
                               "fence all but the newest primary first (the postgres-failover runbook refuses too)")
    if primaries:
        return primaries[0]
    usable = [f for f in facts if f.initialized and not f.fenced]
    if not usable:
        raise ColdStartRefused("no unfenced node has data", "restore from a backup (postgres-point-in-time-restore)")
    return max(usable, key=lambda f: (f.timeline, f.end_lsn, not f.standby, -facts.index(f))).name


# ----------------------------------------------------------------------------- reading the disks
def wal_on_disk(pg: Postgres, name: str) -> WalFacts:
    """Read node ``name``'s data directory: markers, newest timeline and the end of its WAL."""
    d = shlex.quote(pg.context.data_dir(name))
    role = pg.replication.role(name)
    control = pg.servers.run(name, f"test -f {d}/PG_VERSION || exit 0; echo initialized; "
                                   f"test -f {d}/standby.signal && echo standby; test -f {d}/{FENCE_MARKER} && echo fenced; "
                                   f"{pg.servers.tool_path(name, 'pg_controldata')} -D {d}",
                             what="pg_controldata", check=False, timeout=30).stdout
    lines = control.splitlines()
    if "initialized" not in lines:
        return WalFacts(name, role, False, False, False, 0, 0)
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    timeline = int(fields.get("Latest checkpoint's TimeLineID", "0").strip() or 0)
    start = max(parse_lsn(fields.get("Latest checkpoint's REDO location", "0/0").strip()),
                parse_lsn(fields.get("Minimum recovery ending location", "0/0").strip()))
    newest = pg.servers.run(name, f"ls {d}/pg_wal | sed -n 's/^\\([0-9A-F]\\{{8\\}}\\)\\.history$/\\1/p' | sort | tail -n 1",
                            what="list timeline history", check=False, timeout=30).stdout.strip()
    if newest and int(newest, 16) > timeline:  # promoted, no checkpoint on the new timeline yet
        timeline = int(newest, 16)
        history = pg.servers.run(name, f"cat {d}/pg_wal/{newest}.history", what="read timeline history", timeout=30).stdout
        start = max(start, switch_point(history))
    end = start
    if role == "down":
        start_text = f"{start >> 32:X}/{start & 0xFFFFFFFF:X}"
        dump = pg.servers.run(name, f"{pg.servers.tool_path(name, 'pg_waldump')} -q -p {d}/pg_wal -t {timeline} "
                                    f"-s {start_text} 2>&1", what="pg_waldump", check=False, timeout=120).stdout
        end = wal_end(dump, start)
    return WalFacts(name, role, True, "standby" in lines, "fenced" in lines, timeline, end)


def read_nodes(pg: Postgres) -> list[WalFacts]:
    return [wal_on_disk(pg, name) for name in pg.context.node_names]


# ----------------------------------------------------------------------------- the runbook's steps
def demote_others(pg: Postgres, primary: str) -> str:
    """Before anything starts: every node but ``primary`` gets standby.signal and points at it."""
    others = [n for n in pg.context.node_names if n != primary and pg.replication.role(n) == "down"]
    for name in others:
        pg.replication.configure_standby(name, primary)
    return f"{', '.join(others) or 'no node'} will start as standby of {primary}"


def start_primary(pg: Postgres, facts: Mapping[str, WalFacts], name: str) -> str:
    """Start ``name`` and make sure it accepts writes (a former standby is promoted)."""
    if facts[name].running == "primary":
        return f"{name} already runs as the primary"
    started = pg.servers.start(name)  # False: it runs already (a runbook stopped midway had started it)
    role = _role_once_up(pg, name)
    if role == "primary":
        return f"started {name} as the primary (crash recovery replayed its WAL)" if started else \
            f"{name} already runs as the primary"
    took = pg.servers.promote(name)
    return f"started {name} and promoted it ({took:.2f} s to the first write)"


def _role_once_up(pg: Postgres, name: str, timeout: float = 30.0) -> str:
    """The role of a node that runs: "down" there only means it did not answer yet (a loaded host,
    a connection refused while it finishes starting), never that promoting it is safe."""
    deadline = time.monotonic() + timeout
    while (role := pg.replication.role(name)) == "down":
        if time.monotonic() > deadline:
            raise PostgresError(f"{pg.context.name}/{name} runs but has not answered for {timeout:g} s",
                                f"read {pg.context.data_dir(name)}.log")
        time.sleep(0.2)
    return role


def start_standby(pg: Postgres, name: str, primary: str) -> str:
    """Start ``name`` as a standby of ``primary``; if it cannot follow (diverged), rebuild it."""
    state = pg.replication.state(name)
    if state.role == "standby" and state.streaming and state.upstream_port == pg.context.node(primary).port:
        return f"{name} already streams from {primary}"
    if state.role == "down":
        try:
            pg.servers.start(name)
            if pg.replication.wait_streaming(name, timeout=15) == pg.context.node(primary).port:
                pg.replication.wait_caught_up(name, timeout=30)
                return f"{name} streams from {primary}"
        except PostgresError:
            pass
    how = pg.replication.rebuild_standby(name, primary)
    return f"{name} rebuilt as a standby of {primary} ({how})"


# ----------------------------------------------------------------------------- the drill
def power_loss(pg: Postgres, load: Load, then: Callable[[], None] | None = None) -> str:
    """The fault: mark the time, then stop every node immediately, all at once (one thread each);
    ``then`` at once (e.g. release the held runbook)."""
    names = pg.context.node_names
    errors: list[str] = []

    commands = {name: stop_command(pg, name) for name in names}  # before the clock starts: the fault is the stops

    def stop(name: str) -> None:
        try:
            pg.servers.run(name, commands[name], what="pg_ctl stop -m immediate", timeout=70)
        except DrillbookError as exc:
            errors.append(f"{name}: {exc.message}")

    threads = [threading.Thread(target=stop, args=(name,)) for name in names]
    load.mark("fault")
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    load.mark("down")  # writes acknowledged before this were the old service's last, not a recovery
    if then is not None:
        then()
    if errors:
        raise PostgresError("power loss not complete: " + "; ".join(errors))
    return f"{', '.join(names)} stopped immediately at once"


def heal(pg: Postgres) -> str:
    """The cold-start drill's cleanup: the same order as the runbook (primary first), whatever is down."""
    facts = read_nodes(pg)
    primary = choose_primary(facts)
    done = [demote_others(pg, primary), start_primary(pg, {f.name: f for f in facts}, primary)]
    for name in pg.context.node_names:
        if name != primary:
            done.append(start_standby(pg, name, primary))
    return "; ".join(done)


def record_outcome(drill: Drill, pg: Postgres, load: Load, timeout: float = 120.0) -> None:
    """RTO (fault → first write acknowledged once every node was down, on any node: the same one
    may come back) and the acknowledged writes lost, then what the probe saw and the latency by phase."""
    fault = load.marks["fault"]
    first = load.wait_for_write_after(load.marks["down"], timeout=timeout, not_on="")
    time.sleep(0.2)  # a few more writes and probes after the recovery, so the outage's end is seen
    load.stop()
    with pg.connections.connect() as conn:
        outcome = load.outcome(fault, conn, old_node="")
        load.purge(conn)
    drill.measure("rto_seconds", round(first.at - fault, 4), objective="rto_seconds",
                  detail=f"both nodes down → first write acknowledged by {first.node} (writer retries every 20 ms)")
    drill.measure("lost_writes", outcome.rpo_writes, unit="writes", objective="lost_writes",
                  detail=f"acknowledged writes of {outcome.writes} missing after the cold start")
    drill.measure("failed_probes", outcome.failed_probes, unit="probes",
                  detail=f"of {outcome.probes} probes; expected while every node is down (no objective here)")
    drill.measure("longest_outage_seconds", outcome.longest_outage_seconds, detail="first failed probe → next passing probe")
    record_latency(drill, load, fault, first.at)
