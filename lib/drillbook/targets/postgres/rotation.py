"""Rotations on a PostgreSQL service: the application's credentials and the servers' TLS certificates.

``Rotations`` sets passwords, rotates the application between its two login roles
(dual credentials: no failed connection), retires the old login, and issues, installs and
reads back server certificates.
"""
from __future__ import annotations

import hashlib
import secrets as pysecrets
import shlex
import socket
import ssl
import struct
import time
from pathlib import Path

from psycopg import sql

from ... import pki
from .connect import Connections, PostgresContext
from .replication import Replication
from .results import PostgresError, Rotation, ServedCert
from .server import Servers

SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # the protocol's "let us talk TLS" message
ALTERNATES = (("_blue", "_green"), ("_a", "_b"))  # login-role pairs for dual-credential rotation


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


def fetch_served_certificate(address: str, port: int, cafile: str | None, timeout: float = 5.0) -> ServedCert:
    """The certificate a PostgreSQL server presents, read with the protocol's SSLRequest."""
    from cryptography import x509  # heavy: loaded only when a certificate is read

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


class Rotations:
    """Credential and certificate rotation on the service."""

    def __init__(self, context: PostgresContext, connections: Connections, servers: Servers,
                 replication: Replication) -> None:
        self.context = context
        self.connections = connections
        self.servers = servers
        self.replication = replication

    def set_password(self, role: str, password: str, *, login: bool = True) -> None:
        """Set a role's password on the primary, sent as a SCRAM verifier (never in clear text)."""
        if self.context.redactor is not None:
            self.context.redactor.add(f"{self.context.name}.{role} password", password)
        with self.connections.connect(self.replication.primary(), login="admin") as conn:
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
            conn.execute(sql.SQL("ALTER ROLE {} WITH {} PASSWORD {}").format(
                sql.Identifier(role), sql.SQL("LOGIN" if login else "NOLOGIN"), sql.Literal(verifier)))

    def rotate_app_credentials(self, password: str | None = None, grace: float = 0.0) -> Rotation:
        """Dual-credential rotation: give the alternate login role a new password, check it logs in
        on every running node, then publish (role, password) to the secret files in one step.

        The old login keeps working: retire it with ``retire_login`` once clients have moved.
        """
        current = self.connections.credentials("app").user
        new_user = alternate_login(current)
        new_password = password or pysecrets.token_urlsafe(24)
        self.set_password(new_user, new_password)
        for node in self.context.node_names:
            if self.replication.role(node) == "standby":
                self.replication.wait_caught_up(node)
            if self.replication.role(node) != "down":
                with self.connections.connect(node, user=new_user, password=new_password):
                    pass
        time.sleep(grace)
        self.connections.publish_app_credentials(new_user, new_password)
        return Rotation(old_user=current, new_user=new_user, published_at=time.time())

    def retire_login(self, role: str, grace: float = 2.0, terminate: bool = False) -> None:
        """Disable a login role (NOLOGIN, no password) after ``grace`` seconds.

        Clients that read the old credentials just before the switch get the grace period to
        connect; their open sessions keep running unless ``terminate``.
        """
        if role == self.connections.credentials("app").user:
            raise PostgresError(f"{role!r} is the application's current login role; it cannot be retired",
                                "rotate first (rotate_app_credentials), then retire the old one")
        time.sleep(grace)
        with self.connections.connect(self.replication.primary(), login="admin") as conn:
            conn.execute(sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL").format(sql.Identifier(role)))
            if terminate:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))

    def served_certificate(self, name: str) -> ServedCert:
        """The TLS certificate node ``name`` presents to a new connection now."""
        node = self.context.node(name)
        return fetch_served_certificate(node.address, node.port, self.context.rootcert())

    def issue_server_certificate(self, days: int = 90) -> tuple[str, str]:
        """A new server certificate (PEM) and key (PEM) from the environment's own CA (``ca_key``).

        Only a lab has its CA here; elsewhere get the certificate from your PKI.
        """
        if not self.context.service.ca_key or not self.context.rootcert():
            raise PostgresError(f"service {self.context.name!r} has no CA key to issue certificates with",
                                "request a certificate from your PKI and pass it to install_server_certificate")
        ca_cert = Path(self.context.rootcert() or "").read_text()
        names = sorted({n.address for n in self.context.service.nodes} | {"localhost"})
        ca_key = self.context.secret(self.context.service.ca_key)
        cert, key = pki.issue_server_certificate(ca_cert, ca_key, names, days=days)
        if self.context.redactor is not None:
            self.context.redactor.add(f"{self.context.name}.server key (new)", key)
        return cert, key

    def install_server_certificate(self, name: str, cert_pem: str, key_pem: str) -> str:
        """Write a certificate + key where node ``name`` reads them (ssl_cert_file, ssl_key_file).

        Takes effect for new connections at the next ``reload``. Returns the certificate's path.
        """
        rows = self.connections.query(name, "SELECT current_setting('ssl_cert_file'), current_setting('ssl_key_file'), "
                                            "current_setting('data_directory')")
        cert_file, key_file, data = rows[0]
        cert_file = cert_file if cert_file.startswith("/") else f"{data}/{cert_file}"
        key_file = key_file if key_file.startswith("/") else f"{data}/{key_file}"
        c, k = shlex.quote(cert_file), shlex.quote(key_file)
        # The key travels on stdin; both files are replaced by rename, so a reload sees whole files.
        script = (f"umask 077 && cat > {k}.new && printf '%s' {shlex.quote(cert_pem)} > {c}.new && "
                  f"chmod 600 {k}.new && chmod 644 {c}.new && mv {k}.new {k} && mv {c}.new {c}")
        self.servers.run(name, script, what="install server certificate", input=key_pem, timeout=30)
        return cert_file
