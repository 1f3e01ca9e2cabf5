"""The lab's PostgreSQL: passwords, configuration (postgresql.conf, pg_hba), roles, sample data, the pair.

``init_primary`` creates the first node; ``create_roles_and_schema`` and ``ensure_app_login``
make the roles and the sample shop exist; ``bring_up_primary`` and ``ensure_standby`` repair the
pair from what is on disk (``disk_facts``) and what runs.
"""
from __future__ import annotations

import secrets as pysecrets
import shlex
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..errors import LabError
from ..targets.postgres import Postgres
from ..targets.postgres.conventions import FENCE_MARKER, NODE_CONF, conf_string, is_refusal, parse_lsn, render_node_conf
from ..targets.postgres.results import PostgresError
from .oslevel import write_private
from .state import NODES, LabPaths, Say

APP_GROUP, APP_LOGINS = "app", ("app_blue", "app_green")


# ----------------------------------------------------------------------------- passwords
def ensure_secrets(paths: LabPaths) -> None:
    """Create the passwords of the lab's roles, and ``secrets/app_user`` naming the first login, if missing."""
    for name in ("admin_password", "replication_password", "app_password"):
        if not paths.secret(name).exists():
            write_private(paths.secret(name), pysecrets.token_urlsafe(24) + "\n")
    if not paths.secret("app_user").exists():
        write_private(paths.secret("app_user"), APP_LOGINS[0] + "\n")


# ----------------------------------------------------------------------------- PostgreSQL configuration
def render_server_conf(paths: LabPaths) -> str:
    """Settings shared by every node, appended to postgresql.conf (Debian's initdb has no -c)."""
    q = conf_string
    return "\n".join([
        "", "# ---- drillbook lab (written by `drillbook lab up`) ----",
        "listen_addresses = '127.0.0.1'",
        "unix_socket_directories = ''  # TCP + TLS + SCRAM only", "max_connections = 60",
        "shared_buffers = 32MB", "ssl = on", f"ssl_cert_file = {q(str(paths.tls / 'server.crt'))}",
        f"ssl_key_file = {q(str(paths.tls / 'server.key'))}", "ssl_min_protocol_version = 'TLSv1.2'",
        "password_encryption = 'scram-sha-256'", "wal_level = replica", "max_wal_senders = 10",
        "wal_keep_size = '256MB'  # lets a rewound node catch up without archive",
        "wal_log_hints = on  # pg_rewind", "hot_standby = on", "wal_receiver_status_interval = 1s",
        "log_line_prefix = '%m [%p] %q%u@%d '", "log_min_messages = warning",
        "shared_preload_libraries = 'pg_stat_statements'  # the slow-query runbooks read it",
        f"include_if_exists = {q(NODE_CONF)}  # per node: port, primary_conninfo", "",
    ])


def render_hba(replication_user: str = "replicator") -> str:
    """Passwords (SCRAM) over TLS on loopback only; everything else is rejected."""
    return "\n".join([
        "# drillbook lab: TLS + SCRAM on 127.0.0.1 only (no Unix sockets)",
        "# TYPE    DATABASE     USER        ADDRESS         METHOD",
        f"hostssl   replication  {replication_user:<11} 127.0.0.1/32    scram-sha-256",
        "hostssl   all          all         127.0.0.1/32    scram-sha-256",
        "hostnossl all          all         0.0.0.0/0       reject", "",
    ])


SAMPLE_SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL,
                        country char(2) NOT NULL, created_on date NOT NULL);
INSERT INTO customers SELECT i, 'Customer ' || i, 'c' || i || '@example.test',
       (ARRAY['DE','FR','NL','US','JP','BR','IN','ZA'])[1 + i % 8], date '2020-01-01' + (i * 7 % 1461)
  FROM generate_series(1, 5000) AS i;
CREATE TABLE products (id int PRIMARY KEY, sku text UNIQUE NOT NULL, title text NOT NULL,
                       price_cents int NOT NULL CHECK (price_cents > 0));
INSERT INTO products SELECT i, 'SKU-' || lpad(i::text, 5, '0'), 'Product ' || substr(md5(i::text), 1, 8),
       100 + (i * 37 % 9900) FROM generate_series(1, 1000) AS i;
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                     ordered_at timestamp NOT NULL, status text NOT NULL);
INSERT INTO orders SELECT i, 1 + (i * 13 % 5000), timestamp '2023-01-01' + (i * 97 % 31536000) * interval '1 second',
       (ARRAY['new','paid','shipped','delivered','returned'])[1 + i % 5] FROM generate_series(1, 20000) AS i;
CREATE TABLE order_lines (order_id int NOT NULL REFERENCES orders, line_no int NOT NULL,
                          product_id int NOT NULL REFERENCES products, quantity int NOT NULL,
                          price_cents int NOT NULL, PRIMARY KEY (order_id, line_no));
INSERT INTO order_lines SELECT o, l, 1 + (o * 7 + l * 31) % 1000, 1 + (o + l) % 5,
       100 + ((1 + (o * 7 + l * 31) % 1000) * 37 % 9900)
  FROM generate_series(1, 20000) AS o, generate_series(1, 2) AS l;
CREATE SCHEMA drillbook;
CREATE TABLE drillbook.writes (run text NOT NULL, seq bigint NOT NULL,
                               written_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (run, seq));
ANALYZE;
"""
SAMPLE_ROWS = {"customers": 5000, "products": 1000, "orders": 20000, "order_lines": 40000}


def init_primary(pg: Postgres, paths: LabPaths, name: str, say: Say) -> None:
    """initdb node ``name`` (admin password from the secrets), write its configuration and start it."""
    say(f"initdb {name} (PostgreSQL {pg.servers.bin_dir(name)})")
    data = str(paths.node(name))
    admin = pg.connections.credentials("admin")
    q = shlex.quote
    # The password goes through a pipe this shell creates, so the lab user can open /dev/stdin.
    initdb = pg.servers.tool_path(name, "initdb")
    pg.servers.run(name, f"rm -rf {q(data)} && IFS= read -r pw && printf '%s\\n' \"$pw\" | {initdb} "
                         f"-D {q(data)} -U {q(admin.user)} --pwfile=/dev/stdin -E UTF8 --no-locale "
                         f"--auth=scram-sha-256 -k >/dev/null", what="initdb", input=admin.password + "\n", timeout=300)
    pg.servers.run(name, f"printf '%s' {q(render_server_conf(paths))} >> {q(data)}/postgresql.conf && "
                         f"printf '%s' {q(render_hba(pg.context.service.replication_user))} > {q(data)}/pg_hba.conf",
                   what="write configuration", timeout=30)
    pg.servers.write_node_conf(name, render_node_conf(pg.context.node(name).port))
    pg.servers.start(name)


def create_roles_and_schema(pg: Postgres, primary: str, say: Say) -> None:
    """Create what is missing: the replication role, the app group and its logins, the database, the sample shop."""
    with pg.connections.connect(primary, login="admin") as conn:
        have = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
        repl = pg.connections.credentials("replication")
        if repl.user not in have:
            conn.execute(sql.SQL("CREATE ROLE {} WITH REPLICATION LOGIN").format(sql.Identifier(repl.user)))
        if APP_GROUP not in have:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(APP_GROUP)))
        for login in APP_LOGINS:
            if login not in have:
                # Whatever a login role creates belongs to the group, so logins can rotate.
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE {}").format(
                    sql.Identifier(login), sql.Identifier(APP_GROUP)))
                conn.execute(sql.SQL("ALTER ROLE {} SET role = {}").format(
                    sql.Identifier(login), sql.Literal(APP_GROUP)))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.context.service.database,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(pg.context.service.database), sql.Identifier(APP_GROUP)))
    if repl.user not in have:
        pg.rotation.set_password(repl.user, repl.password)
    with pg.connections.connect(primary, login="admin", dbname=pg.context.service.database, autocommit=False) as conn:
        if conn.execute("SELECT 1 FROM pg_settings WHERE name = 'shared_preload_libraries' "
                        "AND setting LIKE '%pg_stat_statements%'").fetchone():
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if conn.execute("SELECT to_regclass('public.order_lines')").fetchone()[0] is None:
            say("seeding the sample schema (66,000 rows)")
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_GROUP)))
            conn.execute(SAMPLE_SCHEMA)
        conn.commit()


def ensure_app_login(pg: Postgres, primary: str, say: Say) -> None:
    """The login in secrets/app_user must work with secrets/app_password: repair an interrupted rotation."""
    creds = pg.connections.credentials("app")
    try:
        with pg.connections.connect(primary):
            return
    except psycopg.OperationalError as exc:
        if not is_refusal(exc):
            raise
    say(f"setting the password of {creds.user} from .lab/secrets/app_password")
    pg.rotation.set_password(creds.user, creds.password)


# ----------------------------------------------------------------------------- repairing the pair
@dataclass(frozen=True)
class DiskFacts:
    initialized: bool
    standby_signal: bool
    fenced: bool
    timeline: int
    checkpoint: int


def disk_facts(pg: Postgres, name: str) -> DiskFacts:
    d = shlex.quote(pg.context.data_dir(name))
    # A promotion writes its timeline's history file at once, but pg_control only shows the new
    # timeline after the next checkpoint: a node killed right after promotion would look older.
    controldata = pg.servers.tool_path(name, "pg_controldata")
    out = pg.servers.run(name, f"test -f {d}/PG_VERSION || exit 0; echo initialized; "
                               f"test -f {d}/standby.signal && echo standby; "
                               f"test -f {d}/{FENCE_MARKER} && echo fenced; "
                               f"ls {d}/pg_wal | sed -n 's/^\\([0-9A-F]\\{{8\\}}\\)\\.history$/history \\1/p'; "
                               f"{controldata} -D {d} 2>/dev/null | grep -E "
                               f"\"^Latest checkpoint's TimeLineID|^Latest checkpoint location\"",
                         what="pg_controldata", check=False, timeout=30).stdout
    timeline, checkpoint = 0, 0
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("history "):
            timeline = max(timeline, int(key.split()[1], 16))
        elif "TimeLineID" in key and value.strip().isdigit():
            timeline = max(timeline, int(value))
        elif "checkpoint location" in key and "/" in value:
            checkpoint = parse_lsn(value.strip())
    lines = out.splitlines()
    return DiskFacts("initialized" in lines, "standby" in lines, "fenced" in lines, timeline, checkpoint)


def bring_up_primary(pg: Postgres, say: Say) -> str:
    """The node that is (or becomes) the primary: running one, else newest stopped one, else promote."""
    running = {n: pg.replication.role(n) for n in NODES}
    primaries = [n for n in NODES if running[n] == "primary"]
    facts = {n: disk_facts(pg, n) for n in NODES}
    newest = lambda names: max(names, key=lambda n: (facts[n].timeline, facts[n].checkpoint, n == NODES[0]))  # noqa: E731
    if primaries:
        # the newest promotion
        keep = max(primaries, key=lambda n: (pg.replication.state(n).timeline or 0, n == NODES[0]))
        for other in primaries:
            if other != keep:
                say(f"{other} is a second primary: fencing it (it will be rebuilt as a standby)")
                pg.servers.fence(other, "second primary found by drillbook lab up")
        return keep
    stopped = [n for n in NODES if facts[n].initialized and not facts[n].fenced and not facts[n].standby_signal]
    if stopped:
        keep = newest(stopped)
        say(f"starting {keep} (primary)")
        pg.servers.start(keep)
        return keep
    standbys = [n for n in NODES if facts[n].initialized and not facts[n].fenced] or \
               [n for n in NODES if facts[n].initialized]
    if not standbys:
        raise LabError("no node of the lab has data", "drillbook lab down --purge, then drillbook lab up")
    keep = newest(standbys)
    say(f"no primary left: promoting {keep}")
    if running[keep] == "down":
        data = shlex.quote(pg.context.data_dir(keep))
        pg.servers.run(keep, f"rm -f {data}/{FENCE_MARKER}", what="clear fence marker")
        pg.servers.start(keep)
    pg.servers.promote(keep)
    return keep


def ensure_standby(pg: Postgres, name: str, primary: str, say: Say) -> None:
    """Leave ``name`` streaming from ``primary``: start it if it is a stopped standby, else rebuild it."""
    facts = disk_facts(pg, name)
    primary_port = pg.context.node(primary).port
    if facts.initialized and facts.standby_signal and not facts.fenced:
        state = pg.replication.state(name)
        if state.role == "standby":
            try:  # a standby whose primary just came back reconnects within a few seconds
                if pg.replication.wait_streaming(name, timeout=10) == primary_port:
                    return
            except PostgresError:
                pass
        elif state.role == "down":
            say(f"starting {name} (standby of {primary})")
            pg.replication.configure_standby(name, primary)
            try:
                pg.servers.start(name)
                pg.replication.wait_streaming(name, timeout=15)
                return
            except PostgresError as exc:
                say(f"{name} does not stream ({exc.message}): rebuilding it")
    why = "creating" if not facts.initialized else ("fenced" if facts.fenced else "not a standby of " + primary)
    say(f"{name}: {why}; building it as a standby of {primary}")
    how = pg.replication.rebuild_standby(name, primary)
    say(f"{name} streams from {primary} ({how})")
