"""Replication in a PostgreSQL service: which node is primary, each node's state and lag, rebuilding a standby.

``Replication`` reads roles and timelines, waits for a standby to stream and catch up,
and makes a node a streaming standby again (pg_rewind, following, or pg_basebackup).
"""
from __future__ import annotations

import shlex
import time

import psycopg

from ...errors import DrillbookError
from .connect import Connections, PostgresContext
from .conventions import (
    FENCE_MARKER,
    PASSFILE,
    conninfo,
    first_line,
    is_refusal,
    parse_lsn,
    pgpass_line,
    render_node_conf,
)
from .results import Lag, NodeState, PostgresError
from .server import Servers


class Replication:
    """Roles, state and lag of the service's nodes; rebuilding a standby."""

    def __init__(self, context: PostgresContext, connections: Connections, servers: Servers) -> None:
        self.context = context
        self.connections = connections
        self.servers = servers

    # ------------------------------------------------------------------ roles
    def role(self, node: str) -> str:
        """``primary``, ``standby`` or ``down`` (not reachable, or not accepting connections yet)."""
        try:
            rows = self.connections.query(node, "SELECT pg_is_in_recovery()")
        except psycopg.OperationalError as exc:
            if not is_refusal(exc):
                return "down"
            raise PostgresError(f"{self.context.name}/{node} answers but refuses us: {first_line(exc)}",
                                "check the admin credentials in the environment file") from None
        return "standby" if rows[0][0] else "primary"

    def roles(self) -> dict[str, str]:
        return {name: self.role(name) for name in self.context.node_names}

    def primary(self, exclude: str | None = None) -> str:
        """The one node accepting writes. No primary, or two (split brain), is an error."""
        found = [n for n, r in self.roles().items() if r == "primary" and n != exclude]
        if len(found) == 1:
            return found[0]
        service = self.context.name
        if not found:
            raise PostgresError(f"service {service!r} has no primary", "promote a standby (postgres-failover runbook)")
        raise PostgresError(f"service {service!r} has {len(found)} primaries: {', '.join(found)} (split brain)",
                            "fence all but the newest primary, then rebuild them as standbys")

    def standbys(self) -> list[str]:
        return [n for n, r in self.roles().items() if r == "standby"]

    def state(self, name: str) -> NodeState:
        """Role, timeline, streaming state and lag of one node (one admin connection)."""
        node = self.context.node(name)
        base = dict(name=name, address=node.address, port=node.port)
        try:
            with self.connections.connect(name, login="admin") as conn:
                recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
                if not recovery:  # the WAL file name starts with the timeline being written
                    timeline = int(conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0][:8], 16)
                    return NodeState(role="primary", timeline=timeline, **base)
                row = conn.execute("SELECT status, sender_port, received_tli FROM pg_stat_wal_receiver").fetchone()
                replay = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
                timeline = (row[2] if row and row[2] else
                            conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0])
        except psycopg.OperationalError as exc:
            return NodeState(role="down", fenced=self.servers.fenced_quietly(name), detail=first_line(exc), **base)
        streaming = bool(row and row[0] == "streaming")
        lag_bytes, lag_seconds = self._lag_from_primary(name, replay)
        fenced = self.servers.fenced_quietly(name)
        return NodeState(role="standby", timeline=timeline, streaming=streaming, fenced=fenced,
                         upstream_port=row[1] if row else None, lag_bytes=lag_bytes, lag_seconds=lag_seconds,
                         **base)

    def states(self) -> list[NodeState]:
        return [self.state(name) for name in self.context.node_names]

    def _lag_from_primary(self, standby: str, replay: str | None) -> tuple[int | None, float | None]:
        """(bytes not replayed, the primary's replay_lag) for a standby; (None, None) without a primary."""
        if not replay:
            return None, None
        for name in self.context.node_names:
            if name == standby:
                continue
            try:
                rows = self.connections.query(name, "SELECT pg_is_in_recovery(), pg_current_wal_lsn()::text, "
                                                    "(SELECT extract(epoch FROM replay_lag) FROM pg_stat_replication "
                                                    " WHERE application_name = %s LIMIT 1)", (standby,))
            except (psycopg.Error, DrillbookError):
                continue
            if rows and not rows[0][0]:
                seconds = float(rows[0][2]) if rows[0][2] is not None else None
                return max(0, parse_lsn(rows[0][1]) - parse_lsn(replay)), seconds
        return None, None

    # ------------------------------------------------------------------ replication
    def lag(self, name: str) -> Lag:
        """How far a standby is behind the primary (bytes of WAL; seconds as the primary sees it)."""
        primary = self.primary(exclude=name)
        replay = self.connections.query(name, "SELECT pg_last_wal_replay_lsn()::text")[0][0]
        rows = self.connections.query(primary, "SELECT pg_current_wal_lsn()::text, "
                                               "(SELECT extract(epoch FROM replay_lag) FROM pg_stat_replication "
                                               " WHERE application_name = %s LIMIT 1)", (name,))
        current, seconds = rows[0]
        behind = max(0, parse_lsn(current) - parse_lsn(replay)) if replay else 0
        return Lag(name, behind, float(seconds) if seconds is not None else None)

    def wait_streaming(self, name: str, timeout: float = 30.0) -> int:
        """Wait until the standby streams WAL; return the port it streams from."""
        deadline = time.monotonic() + timeout
        last = "no WAL receiver"
        while time.monotonic() < deadline:
            try:
                row = self.connections.query(name, "SELECT status, sender_port FROM pg_stat_wal_receiver")
                if row and row[0][0] == "streaming":
                    return int(row[0][1])
                last = f"WAL receiver {row[0][0]}" if row else "no WAL receiver"
            except psycopg.Error as exc:
                last = first_line(exc)
            time.sleep(0.1)
        raise PostgresError(f"{self.context.name}/{name} is not streaming after {timeout:g} s ({last})",
                            f"read {self.context.data_dir(name)}.log; rebuild it with rebuild_standby()")

    def wait_caught_up(self, name: str, timeout: float = 30.0) -> float:
        """Wait until the standby has replayed everything the primary had written when called."""
        t0 = time.monotonic()
        primary = self.primary(exclude=name)
        target = parse_lsn(self.connections.query(primary, "SELECT pg_current_wal_lsn()::text")[0][0])
        while time.monotonic() - t0 < timeout:
            replay = self.connections.query(name, "SELECT pg_last_wal_replay_lsn()::text")[0][0]
            if replay and parse_lsn(replay) >= target:
                return round(time.monotonic() - t0, 3)
            time.sleep(0.05)
        raise PostgresError(f"{self.context.name}/{name} did not catch up with {primary} within {timeout:g} s",
                            "check replication with drillbook lab status (or pg_stat_replication)")

    def rebuild_standby(self, name: str, primary: str | None = None, method: str = "auto") -> str:
        """Make ``name`` a streaming standby of the primary again; return how it was done.

        ``auto`` tries, in order: ``pg_rewind`` (copies only what diverged); ``follow`` when
        pg_rewind finds nothing to rewind from (the node's WAL ends exactly where the new timeline
        forked: it can follow as it is — PostgreSQL refuses a timeline that forked before it); and
        a fresh ``pg_basebackup``. ``rewind`` or ``clone`` force one way. Each way must end with the
        node streaming *and* replaying, or the next is tried.
        """
        primary = primary or self.primary(exclude=name)
        if primary == name:
            raise PostgresError(f"{self.context.name}/{name} is the primary; it cannot be rebuilt as its own standby")
        if method not in ("auto", "rewind", "clone"):
            raise PostgresError(f"unknown rebuild method {method!r}", "use auto, rewind or clone")
        if not self.servers.stop(name, "fast") and self.servers.is_running(name):
            self.servers.stop(name, "immediate")
        ways = ["pg_rewind", "follow"] if method != "clone" and self._initialized(name) else []
        ways = ways[:1] if method == "rewind" else ways + (["pg_basebackup"] if method != "rewind" else [])
        error: PostgresError | None = None
        for how in ways:
            if how == "follow" and (error is None or "previous WAL record" not in error.message):
                continue  # following only helps when pg_rewind found no divergence to undo
            try:
                if how == "pg_rewind":
                    self._rewind(name, primary)
                elif how == "pg_basebackup":
                    self._clone(name, primary)
                self.configure_standby(name, primary)
                self.servers.start(name)
                self._wait_replicating(name, timeout=15 if how == "follow" else 30)
                return how
            except PostgresError as exc:
                error = exc
                if self.servers.is_running(name):
                    self.servers.stop(name, "immediate")
        assert error is not None
        raise error

    def _wait_replicating(self, name: str, timeout: float = 30.0) -> None:
        """Streaming is not enough: a standby on a diverged history receives WAL it never replays."""
        self.wait_streaming(name, timeout=timeout)
        self.wait_caught_up(name, timeout=timeout)

    def _initialized(self, name: str) -> bool:
        data = shlex.quote(self.context.data_dir(name))
        return self.servers.run(name, f"test -f {data}/PG_VERSION", what="look for the data directory", check=False,
                                timeout=30).exit_code == 0

    def _rewind(self, name: str, primary: str) -> None:
        # pg_rewind reads the source's control file: a checkpoint makes a fresh promotion visible.
        self.connections.query(primary, "CHECKPOINT")
        info, password = self.connections.source_conninfo(primary, "admin")
        data = shlex.quote(self.context.data_dir(name))
        # pg_rewind first finishes crash recovery in single-user mode, which refuses standby.signal.
        script = (f"rm -f {data}/standby.signal {data}/recovery.signal && IFS= read -r PGPASSWORD && "
                  f"export PGPASSWORD && {self.servers.tool_path(name, 'pg_rewind')} --target-pgdata={data} "
                  f"--source-server={shlex.quote(info)}")
        self.servers.run(name, script, what="pg_rewind", input=password + "\n", timeout=600)

    def _clone(self, name: str, primary: str) -> None:
        info, password = self.connections.source_conninfo(primary, "replication")
        d = shlex.quote(self.context.data_dir(name))
        old = shlex.quote(self.context.data_dir(name) + ".old")
        # Keep the old directory until the copy succeeds: a failed clone must not lose the node.
        basebackup = self.servers.tool_path(name, "pg_basebackup")
        script = (f"IFS= read -r PGPASSWORD && export PGPASSWORD && rm -rf {old} && "
                  f"if [ -d {d} ]; then mv {d} {old}; fi && mkdir -m 700 {d} && "
                  f"if {basebackup} -D {d} -d {shlex.quote(info)} -X stream -c fast -w; "
                  f"then rm -rf {old}; else rm -rf {d}; if [ -d {old} ]; then mv {old} {d}; fi; exit 1; fi")
        self.servers.run(name, script, what="pg_basebackup (re-clone)", input=password + "\n", timeout=1800)

    def configure_standby(self, name: str, primary: str) -> None:
        """Point ``name`` at ``primary``: its port and primary_conninfo, the replication passfile and
        standby.signal; clears a fence marker. Takes effect when the node (re)starts."""
        node, source = self.context.node(name), self.context.node(primary)
        creds = self.connections.credentials("replication")
        data = self.context.data_dir(name)
        passfile = f"{data}/{PASSFILE}"
        upstream = conninfo(host=source.address, port=source.port, user=creds.user, passfile=passfile,
                            sslmode=self.context.service.sslmode, sslrootcert=self.context.rootcert(),
                            application_name=name)
        self.servers.write_node_conf(name, render_node_conf(node.port, upstream),
                                     extra=f"umask 077 && IFS= read -r line && printf '%s\\n' \"$line\" > "
                                           f"{shlex.quote(passfile)} && touch {shlex.quote(data)}/standby.signal && "
                                           f"rm -f {shlex.quote(data)}/{FENCE_MARKER}",
                                     input=pgpass_line(source.address, source.port, creds.user, creds.password) + "\n")
