"""The lab's PgBouncer: transaction pooling in front of the pair's primary, with an admin console.

Files under ``.lab/data/pgbouncer/`` (the lab's OS user's): ``pgbouncer.ini`` (rewritten by every
``lab up``, pointing at the primary of the moment), ``userlist.txt`` (0600: the pooled login and
the console's admin, with their passwords, so PgBouncer can answer SCRAM and log in to the
server), ``pgbouncer.pid`` and ``pgbouncer.log``. Clients connect with TLS (the nodes' server
certificate), PgBouncer to the nodes with TLS verified against the lab CA. The pooled login
``app_pool`` belongs to the ``app`` group, like the application's rotating logins.

Without a PgBouncer binary (or with ``DRILLBOOK_LAB_PGBOUNCER=none``) the lab comes up without it,
and ``availability`` says why: the runbooks that need it are then not applicable.
"""
from __future__ import annotations

import os
import secrets as pysecrets
from pathlib import Path

from psycopg import sql

from ..targets.postgres import Postgres
from .oslevel import (
    chown,
    find_server_binary,
    require_free_port,
    server_availability,
    start_server,
    stop_server,
    write_private,
)
from .state import LabPaths, LabState, Say

BINARY_VAR = "DRILLBOOK_LAB_PGBOUNCER"
POOL_USER, ADMIN_USER = "app_pool", "pgbouncer_admin"
POOL_SECRET, ADMIN_SECRET = "pool_password", "pgbouncer_admin_password"
POOL_SIZE = 5  # small on purpose: a drill exhausts it with a handful of idle-in-transaction clients


def binary() -> str | None:
    """The PgBouncer to run: ``$DRILLBOOK_LAB_PGBOUNCER`` (a path, or ``none``), else the system's."""
    return find_server_binary(BINARY_VAR, "pgbouncer", "/usr/sbin/pgbouncer")


def availability(found: str | None) -> str:
    return server_availability(found, BINARY_VAR, "no PgBouncer binary (apt-get install pgbouncer, or make system-deps as root)")


def folder(paths: LabPaths) -> Path:
    return paths.data / "pgbouncer"


def render_ini(paths: LabPaths, port: int, primary_port: int, database: str = "app") -> str:
    d, tls = folder(paths), paths.tls
    return "\n".join([
        "; drillbook lab PgBouncer: written by `drillbook lab up` (pointing at the primary)",
        "[databases]",
        f"{database} = host=127.0.0.1 port={primary_port} dbname={database}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1", f"listen_port = {port}", "unix_socket_dir =",
        "auth_type = scram-sha-256", f"auth_file = {d / 'userlist.txt'}", f"admin_users = {ADMIN_USER}",
        f"stats_users = {ADMIN_USER}", "pool_mode = transaction", f"default_pool_size = {POOL_SIZE}",
        "reserve_pool_size = 0", "max_client_conn = 200",
        "; a client waiting longer than this for a server connection is refused",
        "query_wait_timeout = 3",
        "server_tls_sslmode = verify-full", f"server_tls_ca_file = {paths.ca / 'ca.crt'}",
        "client_tls_sslmode = require", f"client_tls_cert_file = {tls / 'server.crt'}",
        f"client_tls_key_file = {tls / 'server.key'}",
        "ignore_startup_parameters = extra_float_digits,options",
        f"pidfile = {d / 'pgbouncer.pid'}", f"logfile = {d / 'pgbouncer.log'}", "",
    ])


def _userlist(paths: LabPaths) -> str:
    def line(user: str, secret: str) -> str:
        password = paths.secret(secret).read_text(encoding="utf-8").strip()
        return '"{}" "{}"'.format(user, password.replace('"', '""'))

    return line(POOL_USER, POOL_SECRET) + "\n" + line(ADMIN_USER, ADMIN_SECRET) + "\n"


def ensure_secrets(paths: LabPaths) -> None:
    for name in (POOL_SECRET, ADMIN_SECRET):
        if not paths.secret(name).exists():
            write_private(paths.secret(name), pysecrets.token_urlsafe(24) + "\n")


def ensure_pool_login(pg: Postgres, paths: LabPaths, primary: str) -> None:
    """The pooled login exists, in the ``app`` group, with the password PgBouncer holds."""
    with pg.connections.connect(primary, login="admin") as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (POOL_USER,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE app").format(sql.Identifier(POOL_USER)))
            conn.execute(sql.SQL("ALTER ROLE {} SET role = app").format(sql.Identifier(POOL_USER)))
    password = paths.secret(POOL_SECRET).read_text(encoding="utf-8").strip()
    pg.rotation.set_password(POOL_USER, password)


def pid(paths: LabPaths) -> int | None:
    """The pid of the lab's PgBouncer if it runs (checked against its command line)."""
    try:
        found = int((folder(paths) / "pgbouncer.pid").read_text().strip())
        cmdline = Path(f"/proc/{found}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return found if str(folder(paths) / "pgbouncer.ini") in cmdline else None


def start(pg: Postgres, paths: LabPaths, state: LabState, primary: str, say: Say) -> None:
    """Write the configuration for ``primary`` and start PgBouncer, or reload the one that runs."""
    found = binary()
    state.pgbouncer = availability(found)
    if found is None:
        stop(paths)
        say(f"pgbouncer: {state.pgbouncer}")
        return
    ensure_secrets(paths)
    ensure_pool_login(pg, paths, primary)
    d = folder(paths)
    d.mkdir(exist_ok=True)
    chown(d, state.os_user)
    ini = d / "pgbouncer.ini"
    ini.write_text(render_ini(paths, state.ports.pgbouncer, state.ports.of(primary)))
    chown(ini, state.os_user)
    write_private(d / "userlist.txt", _userlist(paths), owner=state.os_user)
    if (running := pid(paths)) is not None:
        os.kill(running, 1)  # SIGHUP: PgBouncer re-reads its configuration (a RELOAD)
        return
    require_free_port(state.ports.pgbouncer, "pgbouncer", "(DRILLBOOK_LAB_PGBOUNCER_PORT)")
    start_server(state.os_user, [found, "-d", str(ini)], "pgbouncer", state.ports.pgbouncer, d / "pgbouncer.log")
    say(f"pgbouncer listening on 127.0.0.1:{state.ports.pgbouncer} (transaction pooling, primary {primary})")


def stop(paths: LabPaths) -> bool:
    return stop_server(pid(paths))


def lab_service(port: int) -> dict[str, object]:
    """The lab's PgBouncer as a service of the environment (``local.yaml``)."""
    return {"kind": "pgbouncer", "host": "lab", "port": port, "backend": "postgres", "database": "app",
            "user": POOL_USER, "password": f"file:.lab/secrets/{POOL_SECRET}", "admin_user": ADMIN_USER,
            "admin_password": f"file:.lab/secrets/{ADMIN_SECRET}", "sslmode": "verify-full",
            "sslrootcert": ".lab/ca/ca.crt", "config": ".lab/data/pgbouncer/pgbouncer.ini"}
