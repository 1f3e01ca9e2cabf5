"""Data corruption or a bad change: stop writes, restore into scratch, compare, swap the bad tables back.

Behind the ``data-corruption`` runbook. Diagnosis: page checksum failures, and each table's rows and
checksum on the primary against a caught-up standby (a node that disagrees holds corruption; both
agreeing on wrong data means a bad change, replicated). Resolution, every part gated: make the
database read-only and end its sessions (writes stop); restore a kept base backup into a scratch
instance; compare; copy the tables that differ from the scratch copy back into the primary, in one
transaction (the ``ROLLBACK`` gate); make the database writable again.
"""
from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any, Sequence

from psycopg import sql

from ..targets.postgres import Postgres
from ..targets.postgres.results import Backup, TableSum
from . import restore

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only

Sums = dict[str, TableSum]


def signals(pg: Postgres) -> dict[str, str]:
    """Page checksums on or off, and checksum failures counted by the primary for the database."""
    with pg.connections.connect(pg.replication.primary(), login="admin") as conn:
        enabled = str(conn.execute("SHOW data_checksums").fetchone()[0])
        failures = conn.execute("SELECT coalesce(checksum_failures, 0) FROM pg_stat_database WHERE datname = %s",
                                (pg.context.service.database,)).fetchone()
    return {"data_checksums": enabled, "checksum_failures": str(failures[0] if failures else 0)}


def select(sums: Sums, tables: Sequence[str], volatile: Sequence[str]) -> Sums:
    """The tables asked for (all but the volatile schemas' when none is named)."""
    if tables:
        return {t: s for t, s in sums.items() if t in tables}
    return {t: s for t, s in sums.items() if t.split(".", 1)[0] not in volatile}


def differing(left: Sums, right: Sums) -> list[str]:
    return sorted(t for t in set(left) | set(right) if left.get(t) != right.get(t))


def describe_nodes(primary: str, standby: str | None, sums: Sums, other: Sums | None) -> str:
    if other is None:
        return f"no caught-up standby to compare {primary} with: {len(sums)} tables checksummed on {primary} only"
    bad = differing(sums, other)
    if bad:
        return (f"DISAGREE: {', '.join(bad)} differ between {primary} and {standby}: one node holds corrupted pages "
                "(stop writes, restore, compare)")
    return (f"{primary} and {standby} agree on {len(sums)} tables: no page corruption on one node; if data is wrong, "
            "a bad change was applied and replicated (stop writes, restore a backup from before it, compare)")


def stop_writes(pg: Postgres) -> str:
    """Make the database read-only for every new transaction and end its client sessions (they reconnect read-only)."""
    db = pg.context.service.database
    with pg.connections.connect(pg.replication.primary(), login="admin") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(db)))
        ended = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s "
                             "AND backend_type = 'client backend' AND pid <> pg_backend_pid()", (db,)).fetchone()[0]
    return f"database {db} is read-only for new sessions; {ended} session(s) ended"


def resume_writes(pg: Postgres) -> str:
    db = pg.context.service.database
    with pg.connections.connect(pg.replication.primary(), login="admin") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(sql.Identifier(db)))
    return f"database {db} accepts writes again (new sessions)"


def backup_at(pg: Postgres, path: str) -> Backup:
    """A kept base backup (``postgres-backup-restore -p keep_backup=True`` prints its path) on the primary's host."""
    primary = pg.replication.primary()
    pg.servers.run(primary, f"test -f {shlex.quote(path)}/PG_VERSION", what=f"find the backup at {path}")
    return Backup(path=path, host=pg.context.node(primary).host, source=primary, label=path.rsplit("/", 1)[-1],
                  started_at=0.0, finished_at=0.0, size_bytes=0)


def swap(pg: Postgres, scratch: Any, tables: Sequence[str]) -> str:
    """Replace ``tables`` on the primary with the scratch copy's rows, in one transaction (foreign-key
    triggers off for it: the tables are consistent with each other in the copy)."""
    db = pg.context.service.database
    with scratch.connect(dbname=db) as source, \
            pg.connections.connect(pg.replication.primary(), login="admin", dbname=db, autocommit=False) as target:
        target.execute("SET LOCAL transaction_read_only = off")
        target.execute("SET LOCAL session_replication_role = replica")
        for table in tables:
            schema, name = table.split(".", 1)
            ident = sql.Identifier(schema, name)
            target.execute(sql.SQL("DELETE FROM {}").format(ident))
            with source.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(ident)) as out, \
                    target.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(ident)) as into:
                for block in out:
                    into.write(block)
        target.commit()
    return f"replaced {', '.join(tables)} with the restored copy's rows"


def check_swapped(drill: Drill, pg: Postgres, restored: Sums, tables: Sequence[str]) -> None:
    now = restore.source_checksums(pg, pg.replication.primary())
    for table in tables:
        drill.check(f"{table} equals the restored copy", now.get(table) == restored.get(table),
                    f"{now.get(table)} vs {restored.get(table)}")
