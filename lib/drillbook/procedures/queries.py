"""Slow queries and the locks they hold: pg_stat_statements, running statements, EXPLAIN, cancel/terminate.

Behind the ``postgres-slow-queries`` runbook (and ``postgres-high-latency``), and the ``slow-query``
drill. Every read is on the primary, as the admin login, in the service's database.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import psycopg

from ..measure.compute import percentiles
from ..targets.postgres import Postgres

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only

TOP = """
SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 100), calls, round(total_exec_time)::bigint,
       round(mean_exec_time::numeric, 2)::float
  FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY {order} DESC LIMIT %s
"""
RUNNING = """
SELECT pid, usename, state, round(extract(epoch FROM now() - query_start)::numeric, 1)::float,
       pg_blocking_pids(pid), wait_event_type, query
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = current_database()
   AND state <> 'idle'
 ORDER BY query_start
"""


@dataclass(frozen=True)
class Session:
    pid: int
    user: str
    state: str
    seconds: float
    blocked_by: tuple[int, ...]
    wait: str
    query: str

    def line(self) -> str:
        blocked = f", waits for {', '.join(map(str, self.blocked_by))}" if self.blocked_by else ""
        return f"pid {self.pid} {self.user} {self.state} {self.seconds:.1f} s{blocked}: {self.query[:100]!r}"


def _admin(pg: Postgres) -> psycopg.Connection:
    return pg.connections.connect(pg.replication.primary(), login="admin", dbname=pg.context.service.database)


def statements_missing(pg: Postgres) -> str | None:
    """Why pg_stat_statements cannot be read on the primary (not loaded, no extension), or None."""
    with _admin(pg) as conn:
        loaded = "pg_stat_statements" in str(conn.execute("SHOW shared_preload_libraries").fetchone()[0])
        if not loaded:
            return "pg_stat_statements is not in shared_preload_libraries (add it and restart PostgreSQL)"
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone() is None:
            return ("the pg_stat_statements extension is not created in the database "
                    "(CREATE EXTENSION pg_stat_statements)")
    return None


def top_statements(pg: Postgres, order: str = "total_exec_time", limit: int = 5) -> list[tuple[str, int, int, float]]:
    """The statements with the most total (or mean) execution time: (query, calls, total ms, mean ms)."""
    if order not in ("total_exec_time", "mean_exec_time"):
        raise ValueError(order)
    with _admin(pg) as conn:
        return [tuple(r) for r in conn.execute(TOP.format(order=order), (limit,)).fetchall()]  # type: ignore[misc]


def describe_top(rows: Sequence[tuple[str, int, int, float]], by: str) -> str:
    if not rows:
        return f"no statement recorded yet ({by})"
    lines = [f"  {total:>8} ms total, {mean:>8.2f} ms mean, {calls:>6} calls: {query}"
             for query, calls, total, mean in rows]
    return "\n".join([f"top statements by {by}:", *lines])


def sessions(pg: Postgres) -> list[Session]:
    """Statements running now (and sessions in a transaction), oldest first, with who blocks whom."""
    with _admin(pg) as conn:
        rows = conn.execute(RUNNING).fetchall()
    return [Session(int(r[0]), str(r[1]), str(r[2]), float(r[3] or 0), tuple(r[4] or ()), str(r[5] or ""),
                    str(r[6] or "")) for r in rows]


def runaways(found: Sequence[Session], seconds: float) -> list[Session]:
    """Sessions that block others, or run a statement longer than ``seconds`` (not waiting for a lock:
    a session that waits is the runaway's victim, not its cause)."""
    blockers = {pid for s in found for pid in s.blocked_by}
    return [s for s in found
            if s.pid in blockers or (s.state == "active" and s.seconds > seconds and not s.blocked_by)]


def describe_sessions(found: Sequence[Session], seconds: float) -> str:
    worst = runaways(found, seconds)
    blocked = [s for s in found if s.blocked_by]
    lines = [s.line() for s in found] or ["no statement is running"]
    if worst:
        lines.append(f"RUNAWAY: {len(worst)} session(s) run longer than {seconds:g} s or block others "
                     f"({len(blocked)} blocked): cancelling them is the fix (Resolve below)")
    else:
        lines.append("no runaway: if statements are slow, the top statements above and their plans say why")
    return "\n".join(lines)


def explain(pg: Postgres, query: str) -> str:
    """EXPLAIN (no ANALYZE: nothing runs) of a statement's text; why not, when it has parameters."""
    if "$1" in query:
        return "not explained: the statement has parameters ($1 …); EXPLAIN it with representative values"
    with _admin(pg) as conn:
        try:
            return "\n".join(r[0] for r in conn.execute(f"EXPLAIN {query}").fetchall())  # read-only: no ANALYZE
        except psycopg.Error as exc:
            return f"not explained: {str(exc).strip().splitlines()[0]}"


def cancel(pg: Postgres, pids: Sequence[int], grace: float = 3.0) -> str:
    """``pg_cancel_backend`` each pid; one still blocking others after ``grace`` seconds is terminated."""
    if not pids:
        return "nothing to cancel"
    with _admin(pg) as conn:
        for pid in pids:
            conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
    deadline = time.monotonic() + grace
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [s.pid for s in runaways(sessions(pg), float("inf")) if s.pid in pids]
        time.sleep(0.1)
    if left:
        with _admin(pg) as conn:
            for pid in left:
                conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    terminated = f"; terminated {', '.join(map(str, left))} (still blocking)" if left else ""
    return f"cancelled {', '.join(map(str, pids))}{terminated}"


def write_latency(pg: Postgres, rounds: int = 20) -> dict[str, float]:
    """p50/p95 (ms) of a small write transaction on the primary (INSERT, then rolled back), lock waits capped."""
    took: list[float] = []
    with pg.connections.connect(autocommit=False) as conn:
        conn.execute("SET lock_timeout = '2s'")
        for seq in range(rounds):
            started = time.monotonic()
            conn.execute("INSERT INTO drillbook.writes (run, seq) VALUES ('latency-check', %s)", (seq,))
            conn.rollback()
            took.append((time.monotonic() - started) * 1000)
    return percentiles(took)


def check_latency(drill: Drill, pg: Postgres, objective: str = "latency_p95_ms") -> None:
    try:
        found = write_latency(pg)
    except psycopg.Error as exc:
        drill.check("a write transaction completes", False, str(exc).strip().splitlines()[0])
        return
    drill.measure("write_p95_ms", round(found["p95"], 2), unit="ms",
                  objective=objective if objective in drill.env.objectives else None,
                  detail=f"20 write transactions on the primary: p50 {found['p50']:.2f} ms")


def wait_blocked(pg: Postgres, pid: int | None, timeout: float = 15.0) -> bool:
    """Wait (bounded) until some session waits for ``pid``'s lock."""
    deadline = time.monotonic() + timeout
    while pid is not None and time.monotonic() < deadline:
        if any(pid in s.blocked_by for s in sessions(pg)):
            return True
        time.sleep(0.05)
    return False


# ----------------------------------------------------------------------------- the fault (drill)
class Runaway:
    """A session of the application that locks ``table`` and then runs a long statement in the same
    transaction: every writer of the table queues behind it. Cancelled, its client rolls back."""

    def __init__(self, pg: Postgres, table: str = "drillbook.writes", seconds: int = 300) -> None:
        self.pg, self.table, self.seconds = pg, table, seconds
        self.pid: int | None = None
        self.error = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drillbook-runaway", daemon=True)

    def start(self) -> str:
        self._thread.start()
        if not self._ready.wait(15) or self.pid is None:
            raise RuntimeError(f"the runaway query did not start: {self.error}")
        return f"pid {self.pid} holds an EXCLUSIVE lock on {self.table} and sleeps {self.seconds} s"

    def _run(self) -> None:
        try:
            with self.pg.connections.connect(autocommit=False) as conn:
                self.pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
                conn.execute(f"LOCK TABLE {self.table} IN EXCLUSIVE MODE")
                self._ready.set()
                conn.execute("SELECT pg_sleep(%s)", (self.seconds,))
        except psycopg.Error as exc:  # cancelled or terminated: what the drill expects
            self.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        finally:
            self._ready.set()

    def stop(self) -> str:
        """Cleanup: end it if it still runs (terminated as the admin)."""
        if self._thread.is_alive() and self.pid is not None:
            with _admin(self.pg) as conn:
                conn.execute("SELECT pg_terminate_backend(%s, 5000)", (self.pid,))
            self._thread.join(10)
        return f"runaway ended ({self.error or 'finished'})"
