"""Rotations without an outage: database credentials, the server's TLS certificate, an SSH key.

Each rotation proves its result the way a client would see it: the new login connects and the
old one is refused; every node serves the new certificate (by fingerprint) and it verifies
against the CA clients already trust; the new SSH key logs in and the old one is refused.
"""
from __future__ import annotations

import hashlib
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Sequence

import psycopg
from psycopg import sql

from ..errors import DrillbookError, NotFound
from ..measure.compute import failed_probes, probe_resolution
from ..measure.isolated import IsolatedLoad
from ..measure.load import Load, clock
from ..measure.phases import probe_samples
from ..pki import public_line
from ..targets import write_file_secret
from ..targets.postgres import Postgres
from ..targets.postgres.conventions import is_refusal
from ..targets.postgres.results import PostgresError, ServedCert
from ..targets.postgres.rotation import alternate_login
from .steady import record_phases

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only


class RotationFailed(DrillbookError):
    """A rotation could not prove its new credential: it stops before removing the old one."""

    exit_code = 1


# ----------------------------------------------------------------------------- probes
def probe_every_node(pg: Postgres, run: str, interval: float = 0.03) -> list[Load]:
    """One availability probe per node (new connection + SELECT 1 as the application, TLS verified),
    each in a process of its own: a rotation that breaks any node, primary or standby, shows up
    as failed probes."""
    loads: list[Load] = []
    try:
        for node in pg.context.node_names:
            loads.append(IsolatedLoad(writer=None, probe=pg.connections.portable_connector(node), run=f"{run}-{node}",
                                      probe_interval=interval).start())
        for load in loads:
            load.wait_steady()
    except BaseException:
        stop(loads)
        raise
    return loads


def stop(loads: Sequence[Load]) -> None:
    for load in loads:
        load.stop()


def failed_between(loads: Sequence[Load], start: float, end: float) -> tuple[int, int]:
    """(failed, total) probe attempts of every node that started within [start, end]."""
    probes = [p for load in loads for p in load.probes if start <= p.started <= end]
    return failed_probes(probes), len(probes)


def resolution(loads: Sequence[Load]) -> float:
    return max((probe_resolution(load.probes) for load in loads), default=0.0)


def record_window(drill: Drill, what: str, loads: Sequence[Load] | None, start: float) -> None:
    """Record failed probe connections since ``start`` against the ``failed_probes`` objective."""
    if not loads:
        return
    failed, total = failed_between(loads, start, clock())
    drill.measure(f"failed_probes_{what}", failed, unit="probes", objective="failed_probes",
                  detail=f"{failed} of {total} probe connections failed on {len(loads)} node(s) during the {what} rotation")


def record_latency(drill: Drill, loads: Sequence[Load] | None, start: float, end: float) -> None:
    """Probe latency p50/p95/p99 of every node before, during (``start``→``end``) and after the rotations."""
    if loads:
        record_phases(drill, {"probe": [s for load in loads for s in probe_samples(load.probes)]}, start, end)


# ----------------------------------------------------------------------------- database credentials
def app_login_works(pg: Postgres) -> str:
    """The application's current login connects to every running node; returns who and where."""
    user = pg.connections.credentials("app").user
    reached = []
    for node in pg.context.node_names:
        if pg.replication.role(node) == "down":
            continue
        with pg.connections.connect(node) as conn:
            conn.execute("SELECT 1")
        reached.append(node)
    if not reached:
        raise PostgresError("no node is running", "start the service first")
    return f"{user} logs in on {', '.join(reached)}"


def alternate_exists(pg: Postgres) -> str:
    """The idle login role of the pair exists (the rotation gives it the new password)."""
    idle = alternate_login(pg.connections.credentials("app").user)
    if not pg.connections.query(pg.replication.primary(), "SELECT 1 FROM pg_roles WHERE rolname = %s", (idle,)):
        raise PostgresError(f"login role {idle} does not exist", f"create it: CREATE ROLE {idle} NOLOGIN IN ROLE "
                            "<the application's group role>, then run this runbook again")
    return f"{idle} exists and is idle"


def login_refused(pg: Postgres, user: str, password: str) -> tuple[bool, str]:
    """Is this login refused by the primary now? (True, the server's reason) or (False, ...)."""
    try:
        with pg.connections.connect(pg.replication.primary(), user=user, password=password):
            return False, f"{user} still logs in"
    except psycopg.OperationalError as exc:
        why = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return is_refusal(exc), why


def can_login(pg: Postgres, role: str) -> bool:
    """The role's LOGIN attribute, read from the catalog by the admin."""
    rows = pg.connections.query(pg.replication.primary(), "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
                                (role,))
    return bool(rows and rows[0][0])


def session_user(pg: Postgres) -> str:
    with pg.connections.connect() as conn:
        return str(conn.execute(sql.SQL("SELECT session_user")).fetchone()[0])


# ----------------------------------------------------------------------------- TLS certificate
@dataclass(frozen=True)
class Issued:
    cert: str = field(repr=False)
    key: str = field(repr=False)
    sha256: str
    not_after: str


def fingerprint(cert_pem: str) -> str:
    """sha256 (hex) of the certificate's DER encoding: what ``served_certificate`` reports."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem)).hexdigest()


def not_after(cert_pem: str) -> str:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc.isoformat()


def days_left(not_after_iso: str, now: datetime | None = None) -> float:
    end = datetime.fromisoformat(not_after_iso)
    return round((end - (now or datetime.now(timezone.utc))).total_seconds() / 86400, 1)


def running_nodes(pg: Postgres) -> list[str]:
    return [n for n in pg.context.node_names if pg.replication.role(n) != "down"]


def served(pg: Postgres) -> dict[str, ServedCert]:
    """The certificate each running node serves now."""
    return {node: pg.rotation.served_certificate(node) for node in running_nodes(pg)}


def describe_served(certs: dict[str, ServedCert]) -> str:
    return "\n".join(f"{node}: sha256 {c.sha256[:16]}…, expires {c.not_after} ({days_left(c.not_after):g} days), "
                     f"{'verifies against the CA' if c.verified else 'DOES NOT VERIFY: ' + c.error}"
                     for node, c in certs.items())


def issue(pg: Postgres, days: int) -> Issued:
    cert, key = pg.rotation.issue_server_certificate(days=days)
    return Issued(cert, key, fingerprint(cert), not_after(cert))


def install(pg: Postgres, nodes: Sequence[str], issued: Issued) -> str:
    """Install on every node, then reload each: new connections get the new certificate, open
    ones keep theirs (a reload drops nothing)."""
    for node in nodes:
        pg.rotation.install_server_certificate(node, issued.cert, issued.key)
    for node in nodes:
        pg.servers.reload(node)
    return f"installed and reloaded on {', '.join(nodes)}"


def wait_served(pg: Postgres, node: str, sha256: str, timeout: float = 10.0) -> ServedCert:
    """The certificate ``node`` serves once it is ``sha256`` (a reload is asynchronous), or the last seen."""
    deadline = time.monotonic() + timeout
    while True:
        cert = pg.rotation.served_certificate(node)
        if cert.sha256 == sha256 or time.monotonic() > deadline:
            return cert
        time.sleep(0.1)


def check_new_certificates(drill: Drill, pg: Postgres, before: dict[str, ServedCert]) -> None:
    """Independently of the runbook: each node serves another certificate than before, verified."""
    for node, old in before.items():
        now = pg.rotation.served_certificate(node)
        drill.check(f"{node} serves a new certificate", now.sha256 != old.sha256,
                    f"sha256 {old.sha256[:16]}… → {now.sha256[:16]}…, expires {now.not_after}")
        drill.check(f"{node}'s new certificate verifies against the CA", now.verified, now.error or now.subject)


def ca_client_connects(pg: Postgres, node: str) -> tuple[bool, str]:
    """A new application connection to ``node`` with the service's TLS settings (verify-full)."""
    try:
        with pg.connections.connect(node) as conn:
            conn.execute("SELECT 1")
            tls = bool(conn.pgconn.ssl_in_use)
            return tls, f"sslmode={pg.context.service.sslmode}, TLS in use: {tls}"
    except psycopg.OperationalError as exc:
        return False, str(exc).strip().splitlines()[-1]


# ----------------------------------------------------------------------------- SSH key
def find_ssh_host(env: Any, name: str | None = None) -> str | None:
    """The SSH host whose key to rotate: ``name``, else the first ``ssh`` host with a key and
    ``authorized_keys``; None when the environment has no such host."""
    candidates = [h for h, spec in env.hosts.items() if spec.shell == "ssh" and spec.authorized_keys and spec.key]
    if name is not None:
        if name not in candidates:
            raise NotFound(f"environment {env.name!r} has no SSH host {name!r} with a key and authorized_keys",
                           f"SSH hosts that can rotate: {', '.join(candidates) or 'none'}")
        return name
    return candidates[0] if candidates else None


def reach_ssh_host(drill: Drill, name: str | None, purpose: str) -> tuple[str | None, Any]:
    """(host, connected shell), or (host or None, None) with ``purpose`` recorded as not applicable
    (no SSH host in the environment, or an optional one that cannot be reached). Never a pass."""
    host = find_ssh_host(drill.env, name)
    if host is None:
        drill.not_applicable(purpose, f"environment {drill.env.name!r} has no SSH host with a key and authorized_keys")
        return None, None
    shell = drill.optional_shell(host, purpose)
    if shell is not None:
        drill.cleanup(shell.close, f"close the shell to {host}", mutating=False)
    return host, shell


class SshKeyRotation:
    """Replace the key drillbook logs in to ``host`` with: add the new one, prove it, publish it
    (the host's key secret), remove the old one, prove it is refused. ``undo`` removes a new key
    that was added but never published (the old one still works then)."""

    def __init__(self, drill: Drill, host: str, shell: Any) -> None:
        self.drill, self.host, self.shell = drill, host, shell
        self.spec = drill.env.hosts[host]
        self.old_private = drill.secret(self.spec.key)
        self.old_public = public_line(self.old_private)
        self.new_private: str | None = None
        self.new_public: str | None = None
        self.published = False

    def login(self, which: str) -> tuple[bool, str]:
        """Try a fresh login with the ``old`` or ``new`` key (host key checked as always)."""
        from ..shells.ssh import try_login  # paramiko: loaded only when an SSH key rotates

        key = self.old_private if which == "old" else self.new_private
        if key is None:
            return False, "no new key yet"
        return try_login(self.spec, key, self.drill.project, name=f"{self.host} ({which} key)")

    def add_new(self) -> str:
        from ..shells.ssh import authorized_keys_add, new_keypair  # paramiko: loaded only when an SSH key rotates

        self.new_private, self.new_public = new_keypair(f"drillbook-{self.drill.run_id}")
        self.drill.redactor.add(f"hosts.{self.host}.key (new)", self.new_private)
        authorized_keys_add(self.shell, self.spec.authorized_keys, self.new_public)
        return f"added {self.new_public.split()[0]} key …{self.new_public.split()[1][-12:]}"

    def prove(self, which: str) -> str:
        """Log in with the ``old`` or ``new`` key, or raise: never go on without a working key."""
        ok, why = self.login(which)
        if not ok:
            raise RotationFailed(f"the {which} key does not log in to {self.host}: {why}",
                                 "nothing more was changed; check the host's authorized_keys and sshd log")
        return f"the {which} key logs in to {self.host}"

    def publish(self) -> str:
        """Store the new private key where the environment reads the host's key (``file:`` secret)."""
        assert self.new_private is not None
        path = write_file_secret(self.spec.key, self.new_private.rstrip("\n"), self.drill.project)
        self.published = True
        return f"new key stored in {path.name} (0600)"

    def remove_old(self) -> str:
        from ..shells.ssh import authorized_keys_remove  # paramiko: loaded only when an SSH key rotates

        authorized_keys_remove(self.shell, self.spec.authorized_keys, self.old_public)
        return f"removed key …{self.old_public.split()[1][-12:]} from authorized_keys"

    def undo(self) -> str:
        from ..shells.ssh import authorized_keys_remove  # paramiko: loaded only when an SSH key rotates

        if self.new_public is None or self.published:
            return "nothing to undo"
        authorized_keys_remove(self.shell, self.spec.authorized_keys, self.new_public)
        return "removed the unpublished new key"


def check_ssh_rotated(drill: Drill, host: str, old_private: str) -> None:
    """Independently of the runbook: the key the environment holds now is new and logs in; the old is refused."""
    from ..shells.ssh import try_login  # paramiko: loaded only when an SSH key rotates

    spec = drill.env.hosts[host]
    new_private = drill.secret(spec.key)  # read afresh: the runbook published a new one
    drill.check(f"the key for {host} was replaced", new_private != old_private, f"secret {spec.key}")
    ok, why = try_login(spec, new_private, drill.project, name=f"{host} (new key)")
    drill.check(f"the new key logs in to {host}", ok, why or "logged in and ran a command")
    ok, why = try_login(spec, old_private, drill.project, name=f"{host} (old key)")
    drill.check(f"the old key is refused by {host}", not ok, why or "the old key STILL logs in")
