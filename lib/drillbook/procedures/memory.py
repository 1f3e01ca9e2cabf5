"""High memory on a PostgreSQL node: the settings that bound it and the backends that use it.

Behind the ``postgres-high-memory`` runbook. Each backend's private memory is its ``RssAnon`` in
``/proc/<pid>/status`` on the node's host (shared buffers are counted once, in the settings, not in
every backend that touched them); the worst client backend above a threshold is terminated behind a gate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..targets.postgres import Postgres

SETTINGS = ("shared_buffers", "work_mem", "maintenance_work_mem", "max_connections", "hash_mem_multiplier")
ACTIVITY = """
SELECT pid, usename, state, backend_type, left(coalesce(query, ''), 100)
  FROM pg_stat_activity WHERE pid <> pg_backend_pid()
"""


@dataclass(frozen=True)
class Backend:
    pid: int
    user: str
    state: str
    kind: str
    query: str
    private_mb: float

    def line(self) -> str:
        return (f"pid {self.pid} {self.kind} {self.user or '-'} {self.state or '-'}: "
                f"{self.private_mb:.1f} MB private, {self.query!r}")


def settings(pg: Postgres, node: str) -> dict[str, str]:
    with pg.connections.connect(node, login="admin") as conn:
        rows = conn.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                            (list(SETTINGS),)).fetchall()
    return {str(name): str(value) for name, value in rows}


def describe_settings(found: dict[str, str]) -> str:
    return ("settings: " + ", ".join(f"{k} {found[k]}" for k in SETTINGS if k in found) +
            "\nworst case per node ≈ shared_buffers + max_connections × work_mem × (sorts and hashes per query): "
            "many sessions running big sorts at once is the usual cause")


def backends(pg: Postgres, node: str) -> list[Backend]:
    """Every backend of ``node`` with its private memory, largest first."""
    with pg.connections.connect(node, login="admin") as conn:
        rows = conn.execute(ACTIVITY).fetchall()
    pids = [int(r[0]) for r in rows]
    if not pids:
        return []
    script = ("for p in " + " ".join(map(str, pids)) + "; do printf '%s ' \"$p\"; "
              "awk '/^RssAnon/ {print $2; f=1} END {if (!f) print 0}' /proc/$p/status 2>/dev/null || echo 0; done")
    out = pg.servers.run(node, script, what="read backends' memory", check=False, timeout=30).stdout
    kb = {int(a): int(b) for a, b in (line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)
          if a.isdigit() and b.isdigit()}
    found = [Backend(int(r[0]), str(r[1] or ""), str(r[2] or ""), str(r[3] or ""), str(r[4] or ""),
                     round(kb.get(int(r[0]), 0) / 1024, 1)) for r in rows]
    return sorted(found, key=lambda b: -b.private_mb)


def worst(found: Sequence[Backend], threshold_mb: float) -> list[Backend]:
    """Client backends above ``threshold_mb`` of private memory (never the server's own processes)."""
    return [b for b in found if b.kind == "client backend" and b.private_mb > threshold_mb]


def describe_backends(found: Sequence[Backend], threshold_mb: float, top: int = 5) -> str:
    total = sum(b.private_mb for b in found)
    lines = [b.line() for b in found[:top]] + [f"{len(found)} backends, {total:.1f} MB private in all"]
    bad = worst(found, threshold_mb)
    lines.append(f"OVER: {len(bad)} client backend(s) above {threshold_mb:g} MB: terminating the worst is the fix "
                 "(Resolve below)" if bad else
                 f"no client backend above {threshold_mb:g} MB: the settings above bound the memory")
    return "\n".join(lines)


def terminate(pg: Postgres, node: str, pid: int) -> str:
    with pg.connections.connect(node, login="admin") as conn:
        ended = conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]
    return f"pid {pid} {'terminated' if ended else 'was already gone'}"
