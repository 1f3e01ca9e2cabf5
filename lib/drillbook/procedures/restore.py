"""Backup and restore verification: is the restored copy the source at the backup point?

The source keeps running during the backup, so its state at the backup point is known only for
tables that did not change meanwhile: their checksums before and after the backup are equal, and
the restored copy must hold exactly that. Tables that are expected to change (``volatile``
schemas, e.g. ``drillbook``'s own writes table) are checked as append-only: the restored row
count lies between the source's counts before and after the backup.
"""
from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..targets import host as hosts
from ..targets.postgres import Postgres
from ..targets.postgres.backup import table_checksums
from ..targets.postgres.results import TableSum

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
Sums = Mapping[str, TableSum]  # "schema.table" → rows and content checksum


@dataclass(frozen=True)
class TableVerdict:
    table: str
    ok: bool
    detail: str


# ----------------------------------------------------------------------------- comparing (pure)
def compare(before: Sums, after: Sums, restored: Sums, volatile: Iterable[str] = ()) -> list[TableVerdict]:
    """One verdict per table of the source or the restored copy (see the module docstring)."""
    changing = set(volatile)
    verdicts = []
    for table in sorted(set(before) | set(after) | set(restored)):
        if table.split(".", 1)[0] in changing:
            verdicts.append(_volatile(table, before.get(table), after.get(table), restored.get(table)))
        else:
            verdicts.append(_stable(table, before.get(table), after.get(table), restored.get(table)))
    return verdicts


def _stable(table: str, before: TableSum | None, after: TableSum | None, restored: TableSum | None) -> TableVerdict:
    if before is None or after is None:
        return TableVerdict(table, False, "only in the restored copy, not in the source")
    if before != after:
        return TableVerdict(table, False, f"the source changed during the backup ({before.rows} → {after.rows} rows), "
                                          "so its state at the backup point is unknown: list its schema in "
                                          "volatile_schemas if it is expected to change")
    if restored is None:
        return TableVerdict(table, False, "missing from the restored copy")
    if restored != before:
        return TableVerdict(table, False, f"restored {restored.rows} rows (md5 {restored.md5[:12]}…), "
                                          f"source {before.rows} rows (md5 {before.md5[:12]}…)")
    return TableVerdict(table, True, f"{restored.rows} rows, md5 {restored.md5[:12]}… equal")


def _volatile(table: str, before: TableSum | None, after: TableSum | None, restored: TableSum | None) -> TableVerdict:
    if restored is None:
        return TableVerdict(table, False, "missing from the restored copy")
    counts = [s.rows for s in (before, after) if s is not None]
    low, high = (min(counts), max(counts)) if counts else (0, 0)
    ok = low <= restored.rows <= high
    return TableVerdict(table, ok, f"changing table: {restored.rows} rows restored, source had {low} before "
                                   f"and {high} after the backup")


# ----------------------------------------------------------------------------- reading
def user_schemas(conn: Any) -> list[str]:
    rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_temp\\_%' "
                        "AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%' ORDER BY 1").fetchall()
    return [r[0] for r in rows if r[0] not in SYSTEM_SCHEMAS]


def checksums(conn: Any) -> dict[str, TableSum]:
    """Row count and content checksum of every table in every user schema, as ``schema.table``."""
    sums: dict[str, TableSum] = {}
    for schema in user_schemas(conn):
        sums.update({f"{schema}.{t}": s for t, s in table_checksums(conn, schema).items()})
    return sums


def source_checksums(pg: Postgres, node: str) -> dict[str, TableSum]:
    with pg.connections.connect(node, login="admin", dbname=pg.context.service.database) as conn:
        return checksums(conn)


def scratch_checksums(pg: Postgres, scratch: Any) -> dict[str, TableSum]:
    with scratch.connect(dbname=pg.context.service.database) as conn:
        return checksums(conn)


def summary(sums: Sums) -> str:
    return f"{len(sums)} tables, {sum(s.rows for s in sums.values())} rows"


def room_for_backup(pg: Postgres, node: str) -> tuple[bool, str]:
    """Is there room beside the data directory for a backup and a scratch copy of the cluster?"""
    size = int(pg.connections.query(node, "SELECT sum(pg_database_size(datname))::bigint FROM pg_database")[0][0])
    parent = str(Path(pg.context.data_dir(node)).parent)
    disk = hosts.disk(pg.servers.shell(pg.context.node(node).host), parent)
    need = int(size * 2.2)  # backup + scratch copy + WAL replayed at start
    return disk.free_kb * 1024 >= need, (f"{disk.free_kb // 1024} MiB free in {parent}, "
                                         f"need {need // (1024 * 1024) + 1} MiB (cluster {size // (1024 * 1024)} MiB)")


def scratch_port(port: int) -> int:
    """``port``, or a port nothing listens on now when 0 (the lab: scratch runs on this machine)."""
    if port:
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def leftovers(pg: Postgres, node: str) -> list[str]:
    """Backups and scratch instances beside ``node``'s data directory (a drill must leave none)."""
    parent = shlex.quote(str(Path(pg.context.data_dir(node)).parent))
    script = f"cd {parent} && for d in backups/* scratch/*; do [ -e \"$d\" ] && echo \"$d\"; done; true"
    out = pg.servers.run(node, script, what="list backups and scratch instances", check=False, timeout=30).stdout
    return [line for line in out.splitlines() if line.strip()]


def scratch_gone(pg: Postgres, scratch: Any) -> tuple[bool, str]:
    """Is the scratch instance stopped and its directory removed?"""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        listening = sock.connect_ex((scratch.address, scratch.port)) == 0
    d = shlex.quote(scratch.data_dir)
    exists = pg.servers.run(scratch.node, f"test -e {d}", what="look for the scratch directory", check=False,
                            timeout=30).exit_code == 0
    return not listening and not exists, (f"port {scratch.port} {'still listening' if listening else 'closed'}, "
                                          f"{scratch.data_dir} {'still there' if exists else 'removed'}")
