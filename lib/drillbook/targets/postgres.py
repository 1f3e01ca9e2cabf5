"""A real PostgreSQL service of an environment (a primary and its streaming standbys) as a drill target.

In a drill or runbook notebook::

    from drillbook.targets import postgres
    pg = postgres.Postgres.from_drill(drill)          # the environment's "postgres" service
    pg.roles()                                        # {"pg1": "primary", "pg2": "standby"}
    old = pg.primary()                                # "pg1"; raises if there is none, or two
    pg.stop(old)                                      # immediate: the fault
    pg.fence(old)                                     # it can never come back as a second primary
    pg.promote("pg2")                                 # pg_ctl promote, waits until writes are accepted
    pg.rebuild_standby(old)                           # pg_rewind (or pg_basebackup) → healthy pair again
    with pg.connect() as conn: ...                    # the current primary, as the application role, TLS

    backup = pg.base_backup()                         # pg_basebackup of the primary
    with pg.restore_scratch(backup, port=55440) as scratch:   # a throw-away instance on another port
        table_checksums(scratch.connect()) == table_checksums(pg.connect())
    pg.remove_backup(backup)

    rotation = pg.rotate_app_credentials()            # dual credential: next login role, then publish
    pg.retire_login(rotation.old_user)                # after the grace period
    cert, key = pg.issue_server_certificate()         # lab CA only (``ca_key`` in the environment)
    pg.install_server_certificate("pg1", cert, key); pg.reload("pg1")
    pg.served_certificate("pg1").sha256

Connections use psycopg with the service's TLS settings (``sslmode=verify-full`` against
``sslrootcert`` in the lab). Server-side work (pg_ctl, pg_rewind, pg_basebackup, files in the
data directory) goes through the environment's shells — ``drill.shell(node.host)``, local or
SSH — as the owner of the data directory (``runuser``/``sudo -n`` when the login differs), so the
same code drives a remote host. Secrets reach commands on stdin, never on a command line.

Conventions this module relies on: configuration files live in the data directory (initdb
layout); per-node settings (``port``, ``primary_conninfo``) live in ``drillbook.node.conf``,
included last from ``postgresql.conf`` and rewritten whenever a node is rebuilt, because
pg_rewind and pg_basebackup copy every file of the source.
"""
from __future__ import annotations

import hashlib
import secrets as pysecrets
import shlex
import socket
import ssl
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
from psycopg import sql

from ..environments import Environment, PostgresNode, PostgresService
from ..errors import DrillbookError, NotFound
from ..secrets import Redactor, SecretRef
from ..shell import Result, Shell
from . import write_file_secret

NODE_CONF = "drillbook.node.conf"  # per-node settings, included last from postgresql.conf
PASSFILE = "drillbook.pgpass"  # the replication password for primary_conninfo (0600, in the data dir)
FENCE_MARKER = "drillbook.fenced"  # why and when a node was fenced
SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # the protocol's "let us talk TLS" message
ALTERNATES = (("_blue", "_green"), ("_a", "_b"))  # login-role pairs for dual-credential rotation
# Connection errors that mean "the server answered and said no to *us*": a configuration
# problem, not a node that is down (psycopg reports connection failures without an SQLSTATE).
REFUSALS = ("password authentication failed", "not permitted to log in", "no pg_hba.conf entry",
            "does not exist", "certificate verify failed", "server certificate")


class PostgresError(DrillbookError):
    """A PostgreSQL operation on a target failed (the run goes on to its cleanups)."""

    exit_code = 1


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class NodeState:
    """What one node is doing now. ``role`` is ``primary``, ``standby`` or ``down``."""

    name: str
    role: str
    address: str
    port: int
    timeline: int | None = None
    streaming: bool | None = None  # standbys: is the WAL receiver streaming?
    upstream_port: int | None = None  # standbys: the port it streams from
    lag_bytes: int | None = None  # standbys: WAL not yet replayed, compared with the primary
    lag_seconds: float | None = None  # standbys: the primary's replay_lag (None once idle)
    fenced: bool = False
    detail: str = ""


@dataclass(frozen=True)
class Lag:
    node: str
    bytes: int  # WAL the standby has not replayed yet
    seconds: float | None  # the primary's view (pg_stat_replication.replay_lag); None when idle


@dataclass(frozen=True)
class TableSum:
    rows: int
    md5: str  # md5 over the md5 of every row, in primary-key order


@dataclass(frozen=True)
class Backup:
    """A base backup on ``host`` at ``path`` (a data directory with its WAL, ready to start)."""

    path: str
    host: str
    source: str  # the node it was taken from
    label: str
    started_at: float  # wall clock (time.time())
    finished_at: float
    size_bytes: int

    @property
    def seconds(self) -> float:
        return round(self.finished_at - self.started_at, 3)

    def age(self, now: float | None = None) -> float:
        """Seconds since the backup finished: the data a restore right now would lose."""
        return round((now if now is not None else time.time()) - self.finished_at, 3)


@dataclass(frozen=True)
class ServedCert:
    sha256: str  # hex fingerprint of the DER certificate the server presents
    subject: str
    not_after: str  # ISO 8601, UTC
    serial: int
    verified: bool  # did it verify against the service's CA (sslrootcert) and name?
    error: str = ""


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Rotation:
    old_user: str
    new_user: str
    published_at: float  # wall clock: clients reading the secret from now on get the new login


# ----------------------------------------------------------------------------- small pure helpers
def is_refusal(exc: BaseException) -> bool:
    """Did the server refuse these credentials/settings (as opposed to being unreachable or starting)?"""
    text = str(exc)
    return any(marker in text for marker in REFUSALS)


def parse_lsn(text: str) -> int:
    """'16/B374D848' → byte position."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def conninfo(**params: Any) -> str:
    """A libpq key=value string; values quoted as libpq wants (so paths may hold spaces)."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        text = str(value).replace("\\", "\\\\").replace("'", "\\'")
        parts.append(f"{key}='{text}'")
    return " ".join(parts)


def conf_string(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("'", "''") + "'"


def pgpass_line(address: str, port: int, user: str, password: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace(":", "\\:")

    return f"{esc(address)}:{port}:*:{esc(user)}:{esc(password)}"


def render_node_conf(port: int, primary_conninfo: str | None = None) -> str:
    """The per-node settings file: its port and, on a standby, where it streams from."""
    lines = ["# Written by drillbook for this node; rewritten when the node is rebuilt.", f"port = {port}"]
    if primary_conninfo:
        lines.append(f"primary_conninfo = {conf_string(primary_conninfo)}")
    return "\n".join(lines) + "\n"


def choose_bin_dir(candidates: list[tuple[int, str]], want: int | None) -> str | None:
    """Pick PostgreSQL binaries: the major version the data directory needs, else the highest."""
    if not candidates:
        return None
    if want is not None:
        matching = [path for major, path in candidates if major == want]
        return matching[0] if matching else None
    return max(candidates, key=lambda c: c[0])[1]


def alternate_login(user: str) -> str:
    """The other login role of a dual-credential pair: app_blue ↔ app_green, app_a ↔ app_b."""
    for one, other in ALTERNATES:
        if user.endswith(one):
            return user[: -len(one)] + other
        if user.endswith(other):
            return user[: -len(other)] + one
    raise PostgresError(
        f"login role {user!r} has no alternate, so its credentials cannot rotate without a failed connection",
        "use a pair of login roles named NAME_blue / NAME_green (members of one group role) and point "
        "the service's user at a file holding the current one",
    )


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


def fetch_served_certificate(address: str, port: int, cafile: str | None, timeout: float = 5.0) -> ServedCert:
    """The certificate a PostgreSQL server presents, read with the protocol's SSLRequest."""
    from cryptography import x509

    def handshake(context: ssl.SSLContext) -> bytes:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.sendall(SSL_REQUEST)
            answer = sock.recv(1)
            if answer != b"S":
                raise PostgresError(f"{address}:{port} does not offer TLS (answered {answer!r})",
                                    "set ssl = on in the server's configuration")
            with context.wrap_socket(sock, server_hostname=address) as tls:
                return tls.getpeercert(binary_form=True) or b""

    verified, error = True, ""
    try:
        context = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
        der = handshake(context)
    except ssl.SSLCertVerificationError as exc:
        verified, error = False, exc.verify_message or str(exc)
        loose = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        loose.check_hostname, loose.verify_mode = False, ssl.CERT_NONE
        der = handshake(loose)
    cert = x509.load_der_x509_certificate(der)
    return ServedCert(sha256=hashlib.sha256(der).hexdigest(), subject=cert.subject.rfc4514_string(),
                      not_after=cert.not_valid_after_utc.isoformat(), serial=cert.serial_number,
                      verified=verified, error=error)


# ----------------------------------------------------------------------------- the service
class Postgres:
    """One PostgreSQL service of an environment: its nodes, reached through the environment's shells.

    ``shell(host)`` opens a shell on one of the environment's hosts, ``secret(ref)`` resolves a
    secret reference (and registers it for redaction). Use ``from_drill`` in notebooks and
    ``from_environment`` elsewhere. Close it (or let the drill's cleanup do it) to close the shells.
    """

    def __init__(self, service: PostgresService, *, shell: Callable[[str], Shell], secret: Callable[[str], str],
                 project: Path, name: str = "postgres", redactor: Redactor | None = None,
                 connect_timeout: int = 2) -> None:
        self.service = service
        self.name = name
        self.project = project
        self.redactor = redactor
        self.connect_timeout = connect_timeout  # libpq counts whole seconds, at least 2
        self._open_shell = shell
        self._secret = secret
        self._shells: dict[str, Shell] = {}
        self._logins: dict[str, str] = {}
        self._owners: dict[str, str] = {}
        self._bins: dict[str, str] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_drill(cls, drill: Any, service: str | None = None) -> Postgres:
        """The service of the drill's environment; its shells close with the drill's cleanups."""
        name, spec = _service(drill.env, service)
        pg = cls(spec, shell=lambda host: drill.shell(host), secret=drill.secret, project=drill.project,
                 name=name, redactor=drill.redactor)
        drill.cleanup(pg.close, f"close connections to {name}", mutating=False)
        return pg

    @classmethod
    def from_environment(cls, env: Environment, project: Path, service: str | None = None,
                         redactor: Redactor | None = None) -> Postgres:
        """The service outside a drill (CLI, lab, tests). Secrets are scrubbed from shell output."""
        from ..shell import open_shell

        redactor = redactor or Redactor()
        name, spec = _service(env, service)

        def secret(ref: str) -> str:
            value = SecretRef.parse(ref).resolve(project)
            redactor.add(ref, value)
            return value

        return cls(spec, shell=lambda host: open_shell(env, host, secret, redactor, project), secret=secret,
                   project=project, name=name, redactor=redactor)

    def close(self) -> None:
        for shell in self._shells.values():
            shell.close()
        self._shells.clear()

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ nodes and paths
    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.service.nodes]

    def node(self, name: str) -> PostgresNode:
        for node in self.service.nodes:
            if node.name == name:
                return node
        raise NotFound(f"service {self.name!r} has no node {name!r}", f"nodes: {', '.join(self.node_names)}")

    def path(self, text: str) -> str:
        """A path from the environment file: relative ones are relative to the project root."""
        path = Path(text).expanduser()
        return str(path if path.is_absolute() else (self.project / path).resolve())

    def data_dir(self, name: str) -> str:
        node = self.node(name)
        if not node.data_dir:
            raise PostgresError(f"node {name!r} of {self.name!r} has no data_dir",
                                "add data_dir to the node in the environment file")
        return self.path(node.data_dir)

    def _rootcert(self) -> str | None:
        return self.path(self.service.sslrootcert) if self.service.sslrootcert else None

    # ------------------------------------------------------------------ credentials
    def credentials(self, login: str = "app") -> Credentials:
        """Who to connect as: ``app`` (the application role, read afresh each time), ``admin`` or
        ``replication``. The app's login role and password are read together under a shared lock,
        so a rotation publishing a new pair is never seen half-done."""
        svc = self.service
        if login == "admin":
            return Credentials(svc.admin_user, self._secret_or_empty(svc.admin_password))
        if login == "replication":
            return Credentials(svc.replication_user, self._secret_or_empty(svc.replication_password))
        if login != "app":
            raise NotFound(f"unknown login {login!r}", "use 'app', 'admin' or 'replication'")
        with self._credentials_lock(shared=True):
            user = self._read_user()
            return Credentials(user, self._secret_or_empty(svc.password))

    def _secret_or_empty(self, ref: str | None) -> str:
        return self._secret(ref) if ref else ""

    def _read_user(self) -> str:
        ref = self.service.user
        if not ref.startswith("file:"):
            return ref
        path = SecretRef.parse(ref).path(self.project)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PostgresError(f"cannot read the application's login role from {path}: {exc.strerror}",
                                "for the lab: drillbook lab up") from None

    @contextmanager
    def _credentials_lock(self, shared: bool) -> Iterator[None]:
        """flock beside the password file: a reader never sees a new user with an old password."""
        import fcntl

        ref = self.service.password
        if not ref or not ref.startswith("file:") or not self.service.user.startswith("file:"):
            yield
            return
        lock = SecretRef.parse(ref).path(self.project).with_suffix(".lock")
        try:
            handle = open(lock, "a+")
        except OSError:  # read-only secrets directory: nothing can rotate there either
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish_app_credentials(self, user: str, password: str) -> None:
        """Store a new login role + password for the application, atomically for readers."""
        if not self.service.user.startswith("file:"):
            raise PostgresError(
                f"the application's login role is fixed ({self.service.user!r}) in the environment file",
                "point the service's user at file:PATH so a rotation can switch login roles",
            )
        if self.redactor is not None:
            self.redactor.add(f"{self.name}.password (rotated)", password)
        with self._credentials_lock(shared=False):
            write_file_secret(self.service.password or "", password, self.project)
            write_file_secret(self.service.user, user, self.project)

    # ------------------------------------------------------------------ connections
    def connect(self, node: str | None = None, *, login: str = "app", dbname: str | None = None,
                user: str | None = None, password: str | None = None, timeout: int | None = None,
                autocommit: bool = True) -> psycopg.Connection:
        """A psycopg connection to ``node`` (default: whichever node accepts writes), with TLS.

        ``login`` picks the credentials (``app``, ``admin``); ``user``/``password`` override them.
        """
        creds = self.credentials(login)
        svc = self.service
        nodes = [self.node(node)] if node else list(svc.nodes)
        params: dict[str, Any] = dict(
            host=",".join(n.address for n in nodes), port=",".join(str(n.port) for n in nodes),
            dbname=dbname or (svc.database if login != "admin" else "postgres"),
            user=user or creds.user, password=password if password is not None else creds.password,
            sslmode=svc.sslmode, connect_timeout=max(2, int(timeout or self.connect_timeout)),
            application_name="drillbook", autocommit=autocommit,
        )
        if self._rootcert():
            params["sslrootcert"] = self._rootcert()
        if node is None:
            params["target_session_attrs"] = "read-write"
        return psycopg.connect(**params)

    def connector(self, node: str | None = None, *, login: str = "app", timeout: int | None = None
                  ) -> Callable[[], psycopg.Connection]:
        """A function that opens a new connection each call (credentials read afresh): for probes."""
        return lambda: self.connect(node, login=login, timeout=timeout)

    def portable_connector(self, node: str | None = None, *, login: str = "app", timeout: int | None = None
                           ) -> Connector:
        """Like ``connector``, but picklable: for a load running in another process."""
        return Connector(self.service, self.project, node, login, timeout or self.connect_timeout, self.name)

    def query(self, node: str, text: str, params: Any = None, *, login: str = "admin") -> list[tuple]:
        with self.connect(node, login=login) as conn:
            cur = conn.execute(text, params)
            return cur.fetchall() if cur.description else []

    # ------------------------------------------------------------------ roles
    def role(self, node: str) -> str:
        """``primary``, ``standby`` or ``down`` (not reachable, or not accepting connections yet)."""
        try:
            rows = self.query(node, "SELECT pg_is_in_recovery()")
        except psycopg.OperationalError as exc:
            if not is_refusal(exc):
                return "down"
            raise PostgresError(f"{self.name}/{node} answers but refuses us: {_first_line(exc)}",
                                "check the admin credentials in the environment file") from None
        return "standby" if rows[0][0] else "primary"

    def roles(self) -> dict[str, str]:
        return {name: self.role(name) for name in self.node_names}

    def primary(self, exclude: str | None = None) -> str:
        """The one node accepting writes. No primary, or two (split brain), is an error."""
        found = [n for n, r in self.roles().items() if r == "primary" and n != exclude]
        if len(found) == 1:
            return found[0]
        if not found:
            raise PostgresError(f"service {self.name!r} has no primary", "promote a standby (postgres-failover runbook)")
        raise PostgresError(f"service {self.name!r} has {len(found)} primaries: {', '.join(found)} (split brain)",
                            "fence all but the newest primary, then rebuild them as standbys")

    def standbys(self) -> list[str]:
        return [n for n, r in self.roles().items() if r == "standby"]

    def state(self, name: str) -> NodeState:
        """Role, timeline, streaming state and lag of one node (one admin connection)."""
        node = self.node(name)
        base = dict(name=name, address=node.address, port=node.port)
        try:
            with self.connect(name, login="admin") as conn:
                recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
                if not recovery:  # the WAL file name starts with the timeline being written
                    timeline = int(conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0][:8], 16)
                    return NodeState(role="primary", timeline=timeline, **base)
                row = conn.execute("SELECT status, sender_port, received_tli FROM pg_stat_wal_receiver").fetchone()
                replay = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
                timeline = (row[2] if row and row[2] else
                            conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0])
        except psycopg.OperationalError as exc:
            return NodeState(role="down", fenced=self._fenced_quietly(name), detail=_first_line(exc), **base)
        streaming = bool(row and row[0] == "streaming")
        lag_bytes, lag_seconds = self._lag_from_primary(name, replay)
        return NodeState(role="standby", timeline=timeline, streaming=streaming, fenced=self._fenced_quietly(name),
                         upstream_port=row[1] if row else None, lag_bytes=lag_bytes, lag_seconds=lag_seconds,
                         **base)

    def states(self) -> list[NodeState]:
        return [self.state(name) for name in self.node_names]

    def _lag_from_primary(self, standby: str, replay: str | None) -> tuple[int | None, float | None]:
        """(bytes not replayed, the primary's replay_lag) for a standby; (None, None) without a primary."""
        if not replay:
            return None, None
        for name in self.node_names:
            if name == standby:
                continue
            try:
                rows = self.query(name, "SELECT pg_is_in_recovery(), pg_current_wal_lsn()::text, "
                                        "(SELECT extract(epoch FROM replay_lag) FROM pg_stat_replication "
                                        " WHERE application_name = %s LIMIT 1)", (standby,))
            except (psycopg.Error, DrillbookError):
                continue
            if rows and not rows[0][0]:
                seconds = float(rows[0][2]) if rows[0][2] is not None else None
                return max(0, parse_lsn(rows[0][1]) - parse_lsn(replay)), seconds
        return None, None

    # ------------------------------------------------------------------ commands on the node's host
    def shell(self, host: str) -> Shell:
        if host not in self._shells:
            self._shells[host] = self._open_shell(host)
        return self._shells[host]

    def run(self, name: str, script: str, *, what: str, timeout: float = 120.0, input: str | None = None,
            check: bool = True) -> Result:
        """Run a POSIX sh script on the node's host as the data directory's owner.

        ``what`` names the operation in the error if it fails (with the last line of its output).
        """
        node = self.node(name)
        shell = self.shell(node.host)
        owner = self._owner(name)
        login = self._login(node.host)
        inner = f"cd / && sh -c {shlex.quote(script)}"
        if owner == login:
            command = inner
        elif login == "root":
            command = f"runuser -u {shlex.quote(owner)} -- sh -c {shlex.quote(inner)}"
        else:  # an operator's account with sudo rights to the database owner
            command = f"sudo -n -u {shlex.quote(owner)} -- sh -c {shlex.quote(inner)}"
        result = shell.run(command, timeout=timeout, input=input)
        if check and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise PostgresError(f"{what} failed on {self.name}/{name} (exit {result.exit_code})"
                                + (f": {detail[-1]}" if detail else ""),
                                "read the server log beside the data directory (<data_dir>.log)")
        return result

    def _login(self, host: str) -> str:
        if host not in self._logins:
            self._logins[host] = self.shell(host).run("id -un", timeout=30, check=True).stdout.strip()
        return self._logins[host]

    def _owner(self, name: str) -> str:
        """The OS user that owns the data directory (or, before it exists, its parent)."""
        if self.service.os_user:
            return self.service.os_user
        if name not in self._owners:
            data = shlex.quote(self.data_dir(name))
            out = self.shell(self.node(name).host).run(
                f"stat -c %U {data} 2>/dev/null || stat -c %U \"$(dirname {data})\"", timeout=30)
            if not out.ok or not out.stdout.strip():
                raise PostgresError(f"cannot find who owns the data directory of {self.name}/{name}",
                                    "set os_user for the service in the environment file")
            self._owners[name] = out.stdout.strip()
        return self._owners[name]

    def bin_dir(self, name: str) -> str:
        """Where pg_ctl & co live on the node's host: ``bin_dir``, else found, matching PG_VERSION."""
        if self.service.bin_dir:
            return self.path(self.service.bin_dir)
        host = self.node(name).host
        if host not in self._bins:
            self._bins[host] = self._discover_bin_dir(name)
        return self._bins[host]

    def _discover_bin_dir(self, name: str) -> str:
        script = (
            'want=$(cat "$1/PG_VERSION" 2>/dev/null); echo "want ${want:-}"; '
            'for d in "$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin /usr/pgsql-*/bin '
            '"$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")"; do '
            '[ -x "$d/pg_ctl" ] || continue; '
            'echo "have $("$d/pg_ctl" --version | sed -E \'s/^[^0-9]*([0-9]+).*/\\1/\') $d"; done')
        shell = self.shell(self.node(name).host)
        out = shell.run(f"sh -c {shlex.quote(script)} _ {shlex.quote(self.data_dir(name))}", timeout=30).stdout
        want = None
        candidates: list[tuple[int, str]] = []
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "want" and rest.strip().isdigit():
                want = int(rest)
            elif kind == "have":
                major, _, path = rest.partition(" ")
                if major.isdigit():
                    candidates.append((int(major), path))
        chosen = choose_bin_dir(candidates, want)
        if chosen is None:
            raise PostgresError(f"no PostgreSQL {want or ''} binaries found on host {self.node(name).host!r}",
                                "install them, or set bin_dir for the service in the environment file")
        return chosen

    def tool_path(self, name: str, tool: str) -> str:
        """The path of a PostgreSQL program (``pg_ctl``, ``initdb``…) on node ``name``'s host, quoted for sh."""
        return shlex.quote(f"{self.bin_dir(name)}/{tool}")

    # ------------------------------------------------------------------ server control
    def is_running(self, name: str) -> bool:
        result = self.run(name, f"{self.tool_path(name, 'pg_ctl')} status -D {shlex.quote(self.data_dir(name))}",
                          what="pg_ctl status", check=False, timeout=30)
        return result.exit_code == 0

    def stop(self, name: str, mode: str = "immediate", timeout: float = 60.0) -> bool:
        """Stop a node (``immediate`` = the crash a drill injects; ``fast`` = clean). False if it was down."""
        if not self.is_running(name):
            return False
        self.run(name, f"{self.tool_path(name, 'pg_ctl')} stop -D {shlex.quote(self.data_dir(name))} -m {mode} "
                       f"-w -t {int(timeout)}", what=f"pg_ctl stop -m {mode}", timeout=timeout + 10)
        return True

    def start(self, name: str, timeout: float = 90.0) -> bool:
        """Start a node and wait until it accepts connections. False if it was already running."""
        if self.is_running(name):
            return False
        data = shlex.quote(self.data_dir(name))
        log = shlex.quote(self.data_dir(name) + ".log")
        result = self.run(name, f"{self.tool_path(name, 'pg_ctl')} start -D {data} -l {log} -w -t {int(timeout)}",
                          what="pg_ctl start", timeout=timeout + 10, check=False)
        if not result.ok:
            tail = self.run(name, f"tail -n 3 {log}", what="read the server log", check=False).stdout.strip()
            raise PostgresError(f"pg_ctl start failed on {self.name}/{name}: "
                                f"{(tail.splitlines() or ['no log'])[-1]}",
                                f"read {self.data_dir(name)}.log")
        return True

    def reload(self, name: str) -> None:
        """Re-read configuration and TLS files (pg_ctl reload = SIGHUP); new connections see them."""
        self.run(name, f"{self.tool_path(name, 'pg_ctl')} reload -D {shlex.quote(self.data_dir(name))}",
                 what="pg_ctl reload", timeout=30)

    def fence(self, name: str, reason: str = "fenced by drillbook") -> None:
        """Stop the node if it runs and make sure a restart cannot make it a second primary.

        It gets ``standby.signal`` (if started, it stays read-only in recovery) and a marker saying
        why; ``rebuild_standby`` clears both. On a real host, also power-fence it (STONITH) when
        it is unreachable: this needs its shell.
        """
        self.stop(name, "immediate")
        data = shlex.quote(self.data_dir(name))
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        note = shlex.quote(f"{stamp} {reason}")
        self.run(name, f"test -f {data}/PG_VERSION && touch {data}/standby.signal && "
                       f"printf '%s\\n' {note} > {data}/{FENCE_MARKER}", what="fence", timeout=30)

    def is_fenced(self, name: str) -> bool:
        data = shlex.quote(self.data_dir(name))
        return self.run(name, f"test -f {data}/{FENCE_MARKER}", what="read fence marker", check=False,
                        timeout=30).exit_code == 0

    def _fenced_quietly(self, name: str) -> bool:
        try:
            return self.is_fenced(name)
        except DrillbookError:
            return False

    def promote(self, name: str, timeout: float = 60.0) -> float:
        """pg_ctl promote the standby; return seconds until it accepted a write."""
        t0 = time.monotonic()
        self.run(name, f"{self.tool_path(name, 'pg_ctl')} promote -D {shlex.quote(self.data_dir(name))} -w "
                       f"-t {int(timeout)}", what="pg_ctl promote", timeout=timeout + 10)
        deadline = t0 + timeout
        while True:
            try:
                with self.connect(name, login="admin") as conn:
                    conn.execute("CREATE TEMP TABLE drillbook_promoted (x int)")  # fails while read-only
                    return round(time.monotonic() - t0, 3)
            except psycopg.Error as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(f"{self.name}/{name} still refuses writes {timeout:g} s after promote: "
                                        f"{_first_line(exc)}", f"read {self.data_dir(name)}.log") from None
                time.sleep(0.05)

    # ------------------------------------------------------------------ replication
    def lag(self, name: str) -> Lag:
        """How far a standby is behind the primary (bytes of WAL; seconds as the primary sees it)."""
        primary = self.primary(exclude=name)
        replay = self.query(name, "SELECT pg_last_wal_replay_lsn()::text")[0][0]
        rows = self.query(primary, "SELECT pg_current_wal_lsn()::text, "
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
                row = self.query(name, "SELECT status, sender_port FROM pg_stat_wal_receiver")
                if row and row[0][0] == "streaming":
                    return int(row[0][1])
                last = f"WAL receiver {row[0][0]}" if row else "no WAL receiver"
            except psycopg.Error as exc:
                last = _first_line(exc)
            time.sleep(0.1)
        raise PostgresError(f"{self.name}/{name} is not streaming after {timeout:g} s ({last})",
                            f"read {self.data_dir(name)}.log; rebuild it with rebuild_standby()")

    def wait_caught_up(self, name: str, timeout: float = 30.0) -> float:
        """Wait until the standby has replayed everything the primary had written when called."""
        t0 = time.monotonic()
        primary = self.primary(exclude=name)
        target = parse_lsn(self.query(primary, "SELECT pg_current_wal_lsn()::text")[0][0])
        while time.monotonic() - t0 < timeout:
            replay = self.query(name, "SELECT pg_last_wal_replay_lsn()::text")[0][0]
            if replay and parse_lsn(replay) >= target:
                return round(time.monotonic() - t0, 3)
            time.sleep(0.05)
        raise PostgresError(f"{self.name}/{name} did not catch up with {primary} within {timeout:g} s",
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
            raise PostgresError(f"{self.name}/{name} is the primary; it cannot be rebuilt as its own standby")
        if method not in ("auto", "rewind", "clone"):
            raise PostgresError(f"unknown rebuild method {method!r}", "use auto, rewind or clone")
        if not self.stop(name, "fast") and self.is_running(name):
            self.stop(name, "immediate")
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
                self.start(name)
                self._wait_replicating(name, timeout=15 if how == "follow" else 30)
                return how
            except PostgresError as exc:
                error = exc
                if self.is_running(name):
                    self.stop(name, "immediate")
        assert error is not None
        raise error

    def _wait_replicating(self, name: str, timeout: float = 30.0) -> None:
        """Streaming is not enough: a standby on a diverged history receives WAL it never replays."""
        self.wait_streaming(name, timeout=timeout)
        self.wait_caught_up(name, timeout=timeout)

    def _initialized(self, name: str) -> bool:
        data = shlex.quote(self.data_dir(name))
        return self.run(name, f"test -f {data}/PG_VERSION", what="look for the data directory", check=False,
                        timeout=30).exit_code == 0

    def _source_conninfo(self, primary: str, login: str) -> tuple[str, str]:
        node = self.node(primary)
        creds = self.credentials(login)
        info = conninfo(host=node.address, port=node.port, user=creds.user, dbname="postgres",
                        sslmode=self.service.sslmode, sslrootcert=self._rootcert(), application_name="drillbook")
        return info, creds.password

    def _rewind(self, name: str, primary: str) -> None:
        # pg_rewind reads the source's control file: a checkpoint makes a fresh promotion visible.
        self.query(primary, "CHECKPOINT")
        info, password = self._source_conninfo(primary, "admin")
        data = shlex.quote(self.data_dir(name))
        # pg_rewind first finishes crash recovery in single-user mode, which refuses standby.signal.
        script = (f"rm -f {data}/standby.signal {data}/recovery.signal && IFS= read -r PGPASSWORD && "
                  f"export PGPASSWORD && {self.tool_path(name, 'pg_rewind')} --target-pgdata={data} "
                  f"--source-server={shlex.quote(info)}")
        self.run(name, script, what="pg_rewind", input=password + "\n", timeout=600)

    def _clone(self, name: str, primary: str) -> None:
        info, password = self._source_conninfo(primary, "replication")
        d = shlex.quote(self.data_dir(name))
        old = shlex.quote(self.data_dir(name) + ".old")
        # Keep the old directory until the copy succeeds: a failed clone must not lose the node.
        script = (f"IFS= read -r PGPASSWORD && export PGPASSWORD && rm -rf {old} && "
                  f"if [ -d {d} ]; then mv {d} {old}; fi && mkdir -m 700 {d} && "
                  f"if {self.tool_path(name, 'pg_basebackup')} -D {d} -d {shlex.quote(info)} -X stream -c fast -w; "
                  f"then rm -rf {old}; else rm -rf {d}; if [ -d {old} ]; then mv {old} {d}; fi; exit 1; fi")
        self.run(name, script, what="pg_basebackup (re-clone)", input=password + "\n", timeout=1800)

    def configure_standby(self, name: str, primary: str) -> None:
        """Point ``name`` at ``primary``: its port and primary_conninfo, the replication passfile and
        standby.signal; clears a fence marker. Takes effect when the node (re)starts."""
        node, source = self.node(name), self.node(primary)
        creds = self.credentials("replication")
        data = self.data_dir(name)
        passfile = f"{data}/{PASSFILE}"
        upstream = conninfo(host=source.address, port=source.port, user=creds.user, passfile=passfile,
                            sslmode=self.service.sslmode, sslrootcert=self._rootcert(), application_name=name)
        self.write_node_conf(name, render_node_conf(node.port, upstream),
                             extra=f"umask 077 && IFS= read -r line && printf '%s\\n' \"$line\" > "
                                   f"{shlex.quote(passfile)} && touch {shlex.quote(data)}/standby.signal && "
                                   f"rm -f {shlex.quote(data)}/{FENCE_MARKER}",
                             input=pgpass_line(source.address, source.port, creds.user, creds.password) + "\n")

    def write_node_conf(self, name: str, conf: str, extra: str = "", input: str | None = None,
                        data_dir: str | None = None) -> None:
        """Write the per-node settings file (``conf``) and include it from postgresql.conf, as the
        data directory's owner; ``extra`` is more sh run after it (reading ``input`` on stdin),
        ``data_dir`` another data directory than the node's own (a scratch instance)."""
        data = shlex.quote(data_dir or self.data_dir(name))
        include = shlex.quote(f"include_if_exists = '{NODE_CONF}'")
        script = (f"printf '%s' {shlex.quote(conf)} > {data}/{NODE_CONF} && "
                  f"(grep -q {NODE_CONF} {data}/postgresql.conf || printf '\\n%s\\n' {include} >> {data}/postgresql.conf)")
        if extra:
            script += f" && {extra}"
        self.run(name, script, what="write node configuration", input=input, timeout=30)

    # ------------------------------------------------------------------ backup and restore
    def base_backup(self, target: str | None = None, node: str | None = None, label: str | None = None) -> Backup:
        """pg_basebackup of ``node`` (default: the primary), written on that node's host.

        ``target`` defaults to ``<parent of its data_dir>/backups/<label>``.
        """
        node = node or self.primary()
        spec = self.node(node)
        label = label or f"drillbook-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}"
        path = target or str(Path(self.data_dir(node)).parent / "backups" / label)
        info, password = self._source_conninfo(node, "replication")
        p = shlex.quote(path)
        script = (f"IFS= read -r PGPASSWORD && export PGPASSWORD && mkdir -p \"$(dirname {p})\" && "
                  f"{self.tool_path(node, 'pg_basebackup')} -D {p} -d {shlex.quote(info)} -X stream -c fast -w "
                  f"-l {shlex.quote(label)} && du -sb {p} | cut -f1")
        started = time.time()
        out = self.run(node, script, what="pg_basebackup", input=password + "\n", timeout=3600)
        finished = time.time()
        size = int(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else 0
        return Backup(path=path, host=spec.host, source=node, label=label, started_at=started,
                      finished_at=finished, size_bytes=size)

    def remove_backup(self, backup: Backup) -> None:
        self.run(backup.source, f"rm -rf {shlex.quote(backup.path)}", what="remove backup", timeout=300)

    def restore_scratch(self, backup: Backup, port: int, name: str | None = None) -> Scratch:
        """Copy a backup into a scratch instance on ``port`` (same host) and start it.

        Returns a ``Scratch`` (a context manager: leaving it stops and removes the instance).
        """
        data = str(Path(backup.path).parent.parent / "scratch" / (name or f"restore-{port}"))
        d = shlex.quote(data)
        source = shlex.quote(backup.path)
        t0 = time.monotonic()
        self.run(backup.source, f"rm -rf {d} {d}.log && mkdir -p \"$(dirname {d})\" && cp -a {source} {d} && "
                                f"chmod 700 {d} && rm -f {d}/standby.signal {d}/{FENCE_MARKER} {d}/{PASSFILE} "
                                f"{d}/postmaster.pid", what="copy the backup", timeout=1800)
        self.write_node_conf(backup.source, render_node_conf(port), data_dir=data)
        self.run(backup.source, f"{self.tool_path(backup.source, 'pg_ctl')} start -D {d} -l {d}.log -w -t 300",
                 what="start the restored instance", timeout=320)
        address = self.node(backup.source).address
        return Scratch(self, backup.source, data, address, port, round(time.monotonic() - t0, 3))

    # ------------------------------------------------------------------ credentials and TLS
    def set_password(self, role: str, password: str, *, login: bool = True) -> None:
        """Set a role's password on the primary, sent as a SCRAM verifier (never in clear text)."""
        if self.redactor is not None:
            self.redactor.add(f"{self.name}.{role} password", password)
        with self.connect(self.primary(), login="admin") as conn:
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
            conn.execute(sql.SQL("ALTER ROLE {} WITH {} PASSWORD {}").format(
                sql.Identifier(role), sql.SQL("LOGIN" if login else "NOLOGIN"), sql.Literal(verifier)))

    def rotate_app_credentials(self, password: str | None = None, grace: float = 0.0) -> Rotation:
        """Dual-credential rotation: give the alternate login role a new password, check it logs in
        on every running node, then publish (role, password) to the secret files in one step.

        The old login keeps working: retire it with ``retire_login`` once clients have moved.
        """
        current = self.credentials("app").user
        new_user = alternate_login(current)
        new_password = password or pysecrets.token_urlsafe(24)
        self.set_password(new_user, new_password)
        for node in self.node_names:
            if self.role(node) == "standby":
                self.wait_caught_up(node)
            if self.role(node) != "down":
                with self.connect(node, user=new_user, password=new_password):
                    pass
        time.sleep(grace)
        self.publish_app_credentials(new_user, new_password)
        return Rotation(old_user=current, new_user=new_user, published_at=time.time())

    def retire_login(self, role: str, grace: float = 2.0, terminate: bool = False) -> None:
        """Disable a login role (NOLOGIN, no password) after ``grace`` seconds.

        Clients that read the old credentials just before the switch get the grace period to
        connect; their open sessions keep running unless ``terminate``.
        """
        if role == self.credentials("app").user:
            raise PostgresError(f"{role!r} is the application's current login role; it cannot be retired",
                                "rotate first (rotate_app_credentials), then retire the old one")
        time.sleep(grace)
        with self.connect(self.primary(), login="admin") as conn:
            conn.execute(sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL").format(sql.Identifier(role)))
            if terminate:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))

    def served_certificate(self, name: str) -> ServedCert:
        """The TLS certificate node ``name`` presents to a new connection now."""
        node = self.node(name)
        return fetch_served_certificate(node.address, node.port, self._rootcert())

    def issue_server_certificate(self, days: int = 90) -> tuple[str, str]:
        """A new server certificate (PEM) and key (PEM) from the environment's own CA (``ca_key``).

        Only a lab has its CA here; elsewhere get the certificate from your PKI.
        """
        from ..lab import issue_server_certificate

        if not self.service.ca_key or not self._rootcert():
            raise PostgresError(f"service {self.name!r} has no CA key to issue certificates with",
                                "request a certificate from your PKI and pass it to install_server_certificate")
        ca_cert = Path(self._rootcert() or "").read_text()
        names = sorted({n.address for n in self.service.nodes} | {"localhost"})
        cert, key = issue_server_certificate(ca_cert, self._secret(self.service.ca_key), names, days=days)
        if self.redactor is not None:
            self.redactor.add(f"{self.name}.server key (new)", key)
        return cert, key

    def install_server_certificate(self, name: str, cert_pem: str, key_pem: str) -> str:
        """Write a certificate + key where node ``name`` reads them (ssl_cert_file, ssl_key_file).

        Takes effect for new connections at the next ``reload``. Returns the certificate's path.
        """
        rows = self.query(name, "SELECT current_setting('ssl_cert_file'), current_setting('ssl_key_file'), "
                                "current_setting('data_directory')")
        cert_file, key_file, data = rows[0]
        cert_file = cert_file if cert_file.startswith("/") else f"{data}/{cert_file}"
        key_file = key_file if key_file.startswith("/") else f"{data}/{key_file}"
        c, k = shlex.quote(cert_file), shlex.quote(key_file)
        # The key travels on stdin; both files are replaced by rename, so a reload sees whole files.
        script = (f"umask 077 && cat > {k}.new && printf '%s' {shlex.quote(cert_pem)} > {c}.new && "
                  f"chmod 600 {k}.new && chmod 644 {c}.new && mv {k}.new {k} && mv {c}.new {c}")
        self.run(name, script, what="install server certificate", input=key_pem, timeout=30)
        return cert_file


@dataclass(frozen=True)
class Connector:
    """``Postgres.connect`` as a picklable callable (``measure.IsolatedLoad`` runs it in another
    process). It holds the service's description and the project root only: credentials, and the
    application's rotating login, are read from their references afresh at every call."""

    service: PostgresService
    project: Path
    node: str | None = None
    login: str = "app"
    timeout: int | None = None
    name: str = "postgres"

    def __call__(self) -> psycopg.Connection:
        target = Postgres(self.service, shell=_no_shell, secret=partial(_resolve_secret, self.project),
                          project=self.project, name=self.name)
        return target.connect(self.node, login=self.login, timeout=self.timeout)


def _resolve_secret(project: Path, ref: str) -> str:
    return SecretRef.parse(ref).resolve(project)


def _no_shell(host: str) -> Shell:
    raise PostgresError(f"a portable connector cannot open a shell on {host!r}", "use Postgres for server-side work")


class Scratch:
    """A throw-away instance restored from a backup. ``with`` it, or call ``remove()``."""

    def __init__(self, pg: Postgres, node: str, data_dir: str, address: str, port: int, seconds: float) -> None:
        self.pg, self.node, self.data_dir, self.address, self.port = pg, node, data_dir, address, port
        self.restore_seconds = seconds  # copy + start + WAL replay to consistency

    def connect(self, login: str = "admin", dbname: str | None = None) -> psycopg.Connection:
        """A connection to the restored instance: admin by default (it is not in the service's
        node list), to the service's database unless ``dbname`` says otherwise."""
        creds = self.pg.credentials(login)
        svc = self.pg.service
        params: dict[str, Any] = dict(host=self.address, port=self.port, user=creds.user, password=creds.password,
                                      dbname=dbname or svc.database, sslmode=svc.sslmode, connect_timeout=5,
                                      autocommit=True, application_name="drillbook")
        if self.pg._rootcert():
            params["sslrootcert"] = self.pg._rootcert()
        return psycopg.connect(**params)

    def remove(self) -> None:
        d = shlex.quote(self.data_dir)
        self.pg.run(self.node, f"{self.pg.tool_path(self.node, 'pg_ctl')} stop -D {d} -m immediate -w -t 60 "
                               f">/dev/null 2>&1; rm -rf {d} {d}.log", what="remove the scratch instance",
                    timeout=120)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _service(env: Environment, service: str | None) -> tuple[str, PostgresService]:
    found = {name: svc for name, svc in env.services.items() if svc.kind == "postgres"}
    if service is None:
        if len(found) != 1:
            raise NotFound(f"environment {env.name!r} has {len(found)} postgres services",
                           f"name one: {', '.join(found) or 'add one to the environment file'}")
        service = next(iter(found))
    if service not in found:
        raise NotFound(f"environment {env.name!r} has no postgres service {service!r}",
                       f"known: {', '.join(found) or 'none'}")
    return service, found[service]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
