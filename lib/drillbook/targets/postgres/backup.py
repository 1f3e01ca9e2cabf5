"""Backups of a PostgreSQL service: base backups, scratch restores, and table checksums to compare them.

``Backups`` takes a ``pg_basebackup`` and restores it into a throw-away ``Scratch``
instance on another port; ``table_checksums`` sums every table's content, so a restored copy
can be compared with its source.
"""
from __future__ import annotations

import shlex
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from .connect import Connections, PostgresContext
from .conventions import FENCE_MARKER, PASSFILE, render_node_conf
from .replication import Replication
from .results import Backup, TableSum
from .server import Servers


class Backups:
    """Base backups of a node and their restore into scratch instances."""

    def __init__(self, context: PostgresContext, connections: Connections, servers: Servers,
                 replication: Replication) -> None:
        self.context = context
        self.connections = connections
        self.servers = servers
        self.replication = replication

    def base_backup(self, target: str | None = None, node: str | None = None, label: str | None = None) -> Backup:
        """pg_basebackup of ``node`` (default: the primary), written on that node's host.

        ``target`` defaults to ``<parent of its data_dir>/backups/<label>``.
        """
        node = node or self.replication.primary()
        spec = self.context.node(node)
        label = label or f"drillbook-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}"
        path = target or str(Path(self.context.data_dir(node)).parent / "backups" / label)
        info, password = self.connections.source_conninfo(node, "replication")
        p = shlex.quote(path)
        script = (f"IFS= read -r PGPASSWORD && export PGPASSWORD && mkdir -p \"$(dirname {p})\" && "
                  f"{self.servers.tool_path(node, 'pg_basebackup')} -D {p} -d {shlex.quote(info)} -X stream -c fast -w "
                  f"-l {shlex.quote(label)} && du -sb {p} | cut -f1")
        started = time.time()
        out = self.servers.run(node, script, what="pg_basebackup", input=password + "\n", timeout=3600)
        finished = time.time()
        size = int(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else 0
        return Backup(path=path, host=spec.host, source=node, label=label, started_at=started,
                      finished_at=finished, size_bytes=size)

    def remove_backup(self, backup: Backup) -> None:
        self.servers.run(backup.source, f"rm -rf {shlex.quote(backup.path)}", what="remove backup", timeout=300)

    def restore_scratch(self, backup: Backup, port: int, name: str | None = None) -> Scratch:
        """Copy a backup into a scratch instance on ``port`` (same host) and start it.

        Returns a ``Scratch`` (a context manager: leaving it stops and removes the instance).
        """
        data = str(Path(backup.path).parent.parent / "scratch" / (name or f"restore-{port}"))
        d = shlex.quote(data)
        source = shlex.quote(backup.path)
        t0 = time.monotonic()
        self.servers.run(backup.source, f"rm -rf {d} {d}.log && mkdir -p \"$(dirname {d})\" && cp -a {source} {d} && "
                                        f"chmod 700 {d} && rm -f {d}/standby.signal {d}/{FENCE_MARKER} {d}/{PASSFILE} "
                                        f"{d}/postmaster.pid", what="copy the backup", timeout=1800)
        self.servers.write_node_conf(backup.source, render_node_conf(port), data_dir=data)
        pg_ctl = self.servers.tool_path(backup.source, "pg_ctl")
        self.servers.run(backup.source, f"{pg_ctl} start -D {d} -l {d}.log -w -t 300",
                         what="start the restored instance", timeout=320)
        address = self.context.node(backup.source).address
        seconds = round(time.monotonic() - t0, 3)
        return Scratch(self.connections, self.servers, backup.source, data, address, port, seconds)


class Scratch:
    """A throw-away instance restored from a backup. ``with`` it, or call ``remove()``."""

    def __init__(self, connections: Connections, servers: Servers, node: str, data_dir: str, address: str, port: int,
                 seconds: float) -> None:
        self.connections, self.servers = connections, servers
        self.node, self.data_dir, self.address, self.port = node, data_dir, address, port
        self.restore_seconds = seconds  # copy + start + WAL replay to consistency

    def connect(self, login: str = "admin", dbname: str | None = None) -> psycopg.Connection:
        """A connection to the restored instance: admin by default (it is not in the service's
        node list), to the service's database unless ``dbname`` says otherwise."""
        creds = self.connections.credentials(login)
        svc = self.connections.context.service
        params: dict[str, Any] = dict(host=self.address, port=self.port, user=creds.user, password=creds.password,
                                      dbname=dbname or svc.database, sslmode=svc.sslmode, connect_timeout=5,
                                      autocommit=True, application_name="drillbook")
        rootcert = self.connections.context.rootcert()
        if rootcert:
            params["sslrootcert"] = rootcert
        return psycopg.connect(**params)

    def remove(self) -> None:
        d = shlex.quote(self.data_dir)
        self.servers.run(self.node, f"{self.servers.tool_path(self.node, 'pg_ctl')} stop -D {d} -m immediate -w -t 60 "
                                    f">/dev/null 2>&1; rm -rf {d} {d}.log", what="remove the scratch instance",
                         timeout=120)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def table_checksums(conn: psycopg.Connection, schema: str = "public") -> dict[str, TableSum]:
    """Row count and content checksum of every table of ``schema``: equal sums mean equal data.

    The checksum is the md5 of every row's md5 in primary-key order (whole-row order without a
    key), so it depends on content only, not on physical layout: a restored copy sums the same.
    """
    tables = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1", (schema,)).fetchall()]
    sums = {}
    for table in tables:
        order = _order_by(conn, schema, table)
        query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY {order}), '')) "
                        "FROM {schema}.{table} AS t").format(
            order=order, schema=sql.Identifier(schema), table=sql.Identifier(table))
        rows, digest = conn.execute(query).fetchone()
        sums[table] = TableSum(int(rows), digest)
    return sums


def _order_by(conn: psycopg.Connection, schema: str, table: str) -> sql.Composable:
    keys = [r[0] for r in conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass "
        "AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)", (schema, table)).fetchall()]
    if not keys:
        return sql.SQL("t::text")
    return sql.SQL(", ").join(sql.SQL("t.") + sql.Identifier(k) for k in keys)
