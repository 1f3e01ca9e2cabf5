"""The embedded lab: a real PostgreSQL primary + streaming standby (and an sshd) on 127.0.0.1.

    drillbook lab up                      # create (~4 s) or repair; idempotent: a warm run takes < 1 s
    drillbook lab status                  # roles, timelines, replication lag, ports, ssh
    drillbook lab down [--purge]          # stop everything it started; --purge also removes .lab/

Everything lives under ``<project>/.lab/`` (git-ignored)::

    lab.json            ports, OS user, binaries: what every command agrees on
    bin -> …/bin        the PostgreSQL binaries in use (system ones, else the pgserver wheel's if it
                        was built with TLS: the lab serves nothing else, and pgserver 0.1.4's is not)
    secrets/            0700: admin_password, replication_password, app_password, app_user (0600 each)
    ca/                 the lab CA: ca.crt (clients verify against it), ca.key (0600)
    data/pg1, data/pg2  the two nodes (owned by the lab's OS user); data/tls/ server certificate and key
    data/pgN.log        each node's server log; data/backups/, data/scratch/ hold drill leftovers
    ssh/                sshd_config, host key, authorized_keys, known_hosts, client_key (0600), sshd.log

Ports: pg1 55432, pg2 55433, sshd 55422 by default; ``--pg1-port/--pg2-port/--ssh-port`` or
``DRILLBOOK_LAB_PG1_PORT``/``…_PG2_PORT``/``…_SSH_PORT`` choose others when the lab is created.
``parameters/environments/local.yaml`` must name the same ports (``status`` warns if not).

Run as root, the servers run as the system user ``drillbook-lab`` (created on first use; initdb
refuses root), and the ssh host logs in as it. Run as anyone else, they run as you; the ssh host
then works only if ``hosts.lab-ssh.user`` in local.yaml names you. Every parent directory of the
project must be searchable by that user. Without an OpenSSH server binary (or with
``DRILLBOOK_LAB_SSHD=none``; a path there picks another sshd) the lab still comes up and
``status`` says why ssh is unavailable.

Roles: ``postgres`` (superuser), ``replicator`` (replication), ``app`` (owns the sample schema,
no login) and its two login roles ``app_blue``/``app_green``; ``secrets/app_user`` names the one
in use, so credentials rotate with no failed connection. Connections need TLS (verify-full
against ``ca/ca.crt``) and a SCRAM password. Database ``app`` holds a deterministic sample shop
(customers, products, orders, order_lines: 66,000 rows) and ``drillbook.writes`` for the
sequenced writer that measures RPO.

``up`` repairs: it starts stopped nodes, keeps the newest primary after a failover, rebuilds a
fenced or diverged node as a standby (pg_rewind, else pg_basebackup), promotes a standby if no
primary is left, restores the application's login if a rotation was interrupted, and starts sshd.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import psycopg
import yaml
from psycopg import sql

from .environments import validate_environment
from .errors import DrillbookError, LabError
from .secrets import Redactor
from .shell import LocalShell
from .targets import postgres as pgt

LAB_ENV = "local"  # the environment file that describes the lab
LAB_USER = "drillbook-lab"  # the unprivileged OS user the servers run as when we are root
NODES = ("pg1", "pg2")
APP_GROUP, APP_LOGINS = "app", ("app_blue", "app_green")
SSHD_VAR = "DRILLBOOK_LAB_SSHD"  # path of the sshd to run, or "none" for a lab without ssh
PORT_VARS = {"pg1": "DRILLBOOK_LAB_PG1_PORT", "pg2": "DRILLBOOK_LAB_PG2_PORT", "ssh": "DRILLBOOK_LAB_SSH_PORT"}
REQUIRED_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_basebackup", "pg_rewind", "pg_controldata")
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class LabPorts:
    pg1: int = 55432
    pg2: int = 55433
    ssh: int = 55422

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: int | None) -> LabPorts:
        """Ports from explicit values, else environment variables, else the defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for name, var in PORT_VARS.items():
            raw = given.get(name) or environ.get(var)
            if raw in (None, ""):
                continue
            try:
                port = int(raw)
            except ValueError:
                raise LabError(f"{var}={raw!r} is not a port number", "use an integer between 1024 and 65535") from None
            if not 1024 <= port <= 65535:
                raise LabError(f"lab port {port} for {name} is out of range", "use a port between 1024 and 65535")
            values[name] = port
        ports = cls(**values)
        if len({ports.pg1, ports.pg2, ports.ssh}) != 3:
            raise LabError(f"lab ports must differ, got pg1={ports.pg1} pg2={ports.pg2} ssh={ports.ssh}")
        return ports

    def of(self, node: str) -> int:
        return int(getattr(self, node))


@dataclass
class LabState:
    """What ``lab up`` decided, in ``.lab/lab.json``, so later commands agree with it."""

    ports: LabPorts
    os_user: str
    bin_dir: str = ""
    pg_major: int = 0
    ssh: str = "unknown"  # "enabled" or "unavailable: <reason>"
    created_at: str = ""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ports": asdict(self.ports)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabState:
        data = json.loads(text)
        return cls(**{**data, "ports": LabPorts(**data["ports"])})


class LabPaths:
    """Every path of the lab, from the project root."""

    def __init__(self, project: Path) -> None:
        self.project = project.resolve()
        self.root = self.project / ".lab"
        self.state = self.root / "lab.json"
        self.bin = self.root / "bin"
        self.secrets = self.root / "secrets"
        self.ca = self.root / "ca"
        self.data = self.root / "data"
        self.tls = self.data / "tls"
        self.ssh = self.root / "ssh"

    def node(self, name: str) -> Path:
        return self.data / name

    def secret(self, name: str) -> Path:
        return self.secrets / name


def load_state(paths: LabPaths) -> LabState | None:
    try:
        return LabState.from_json(paths.state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise LabError(f"{paths.state} is unreadable: {exc}", "drillbook lab down --purge, then drillbook lab up") from None


def save_state(paths: LabPaths, state: LabState) -> None:
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(state.to_json(), encoding="utf-8")
    os.replace(tmp, paths.state)


# ----------------------------------------------------------------------------- the environment it implies
def environment_data(ports: LabPorts, ssh_user: str = LAB_USER) -> dict[str, Any]:
    """The environment (as in ``local.yaml``) that describes a lab on these ports."""
    node = lambda name: {"name": name, "host": "lab", "port": ports.of(name), "data_dir": f".lab/data/{name}"}  # noqa: E731
    return {
        "description": "Embedded local lab (PostgreSQL primary + standby on 127.0.0.1, sshd on loopback)",
        "production": False,
        "hosts": {
            "lab": {"shell": "local"},
            "lab-ssh": {"shell": "ssh", "address": "127.0.0.1", "port": ports.ssh, "user": ssh_user,
                        "key": "file:.lab/ssh/client_key", "known_hosts": ".lab/ssh/known_hosts",
                        "authorized_keys": "$DRILLBOOK_LAB_DIR/ssh/authorized_keys", "connect_timeout": 5,
                        "optional": True},
        },
        "services": {
            "postgres": {
                "kind": "postgres", "database": "app",
                "user": "file:.lab/secrets/app_user", "password": "file:.lab/secrets/app_password",
                "admin_user": "postgres", "admin_password": "file:.lab/secrets/admin_password",
                "replication_user": "replicator", "replication_password": "file:.lab/secrets/replication_password",
                "sslmode": "verify-full", "sslrootcert": ".lab/ca/ca.crt", "ca_key": "file:.lab/ca/ca.key",
                "bin_dir": ".lab/bin", "nodes": [node(name) for name in NODES],
            },
        },
        "objectives": {"rto_seconds": 30, "rpo_seconds": 5, "failed_probes": 0, "backup_age_seconds": 3600},
    }


def environment_yaml(ports: LabPorts, ssh_user: str = LAB_USER, parameters: dict[str, Any] | None = None) -> str:
    """``local.yaml`` text for a lab on these ports (tests write it into their temporary projects)."""
    data = environment_data(ports, ssh_user)
    if parameters:
        data["parameters"] = parameters
    return "# The embedded lab, started by `drillbook lab up`.\n" + yaml.safe_dump(data, sort_keys=False)


def lab_postgres(paths: LabPaths, state: LabState, redactor: Redactor | None = None) -> pgt.Postgres:
    """The lab's service as a drill target, with local shells (switching to the lab's OS user)."""
    env = validate_environment(environment_data(state.ports, state.os_user), paths.project / "parameters" / "lab.yaml")
    redactor = redactor or Redactor()

    def secret(ref: str) -> str:
        from .secrets import SecretRef

        value = SecretRef.parse(ref).resolve(paths.project)
        redactor.add(ref, value)
        return value

    return pgt.Postgres(env.services["postgres"], shell=lambda host: LocalShell(host, redactor), secret=secret,
                        project=paths.project, redactor=redactor)


# ----------------------------------------------------------------------------- binaries
def pg_major(bin_dir: Path) -> int | None:
    """Major version of the binaries in ``bin_dir`` (from ``pg_ctl --version``)."""
    try:
        out = subprocess.run([str(bin_dir / "pg_ctl"), "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    digits = "".join(ch if ch.isdigit() or ch == "." else " " for ch in out).split()
    return int(digits[0].split(".")[0]) if digits and digits[0].split(".")[0].isdigit() else None


def binary_candidates(pg_config: str | None = "pg_config", pattern: str = "/usr/lib/postgresql/*/bin",
                      wheel: bool = True) -> list[tuple[int, str]]:
    """PostgreSQL binary directories with every tool the lab needs, system ones first, highest version first."""
    dirs: list[Path] = []
    if pg_config and shutil.which(pg_config):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            dirs.append(Path(out.stdout.strip()))
    import glob

    dirs += [Path(p) for p in glob.glob(pattern)]
    found: dict[str, int] = {}
    for directory in dirs:
        if all((directory / tool).is_file() for tool in REQUIRED_TOOLS) and str(directory) not in found:
            major = pg_major(directory)
            if major:
                found[str(directory.resolve())] = major
    system = sorted(((m, p) for p, m in found.items()), key=lambda c: -c[0])
    return system + ([w] if wheel and (w := wheel_binaries()) else [])


def wheel_binaries() -> tuple[int, str] | None:
    """The PostgreSQL shipped in the pgserver wheel, if installed."""
    import importlib.util

    spec = importlib.util.find_spec("pgserver")  # located, not imported: importing it has side effects
    if spec is None or not spec.origin:
        return None
    directory = Path(spec.origin).parent / "pginstall" / "bin"
    major = pg_major(directory) if (directory / "pg_ctl").is_file() else None
    return (major, str(directory)) if major else None


def choose_binaries(candidates: list[tuple[int, str]], want: int | None) -> str | None:
    """The first candidate of the version the data needs; for a new lab, the first (system, highest)."""
    if want is None:
        return candidates[0][1] if candidates else None
    return pgt.choose_bin_dir(candidates, want)


def supports_tls(bin_dir: Path) -> bool:
    """Were these binaries built with OpenSSL? (The pgserver wheel's are not: no TLS, no lab.)"""
    pg_config = bin_dir / "pg_config"
    if not pg_config.is_file():
        return True  # cannot tell: the server's log will say if ssl = on is refused
    out = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, timeout=10).stdout
    return "--with-openssl" in out or "--with-ssl=openssl" in out


def _select_binaries(paths: LabPaths, state: LabState) -> None:
    want = _data_version(paths)
    current = Path(state.bin_dir) if state.bin_dir else None
    if current and (current / "pg_ctl").is_file() and (want is None or pg_major(current) == want):
        chosen: str | None = str(current)
    else:
        found = binary_candidates()
        usable = [c for c in found if supports_tls(Path(c[1]))]
        chosen = choose_binaries(usable, want)
        if not chosen and found:
            raise LabError(f"the PostgreSQL binaries found ({', '.join(p for _, p in found)}) cannot serve TLS, "
                           "and the lab serves nothing else", "install PostgreSQL built with OpenSSL: apt-get install "
                           "postgresql (make system-deps does it as root)")
    if not chosen:
        need = f"PostgreSQL {want}" if want else "PostgreSQL"
        raise LabError(f"no {need} binaries found (looked at pg_config, /usr/lib/postgresql/*/bin, the pgserver wheel)",
                       "apt-get install postgresql (make system-deps does it as root)"
                       + ("; or drillbook lab down --purge to start over with another version" if want else ""))
    state.bin_dir, state.pg_major = chosen, pg_major(Path(chosen)) or 0
    if paths.bin.is_symlink() or paths.bin.exists():
        if os.readlink(paths.bin) == chosen:
            return
        paths.bin.unlink()
    paths.bin.symlink_to(chosen)


def _data_version(paths: LabPaths) -> int | None:
    for name in NODES:
        version = paths.node(name) / "PG_VERSION"
        try:
            return int(version.read_text().strip())
        except (OSError, ValueError):
            continue
    return None


# ----------------------------------------------------------------------------- the OS user
def lab_user() -> str:
    """Who the servers run as: ``drillbook-lab`` when we are root, else ourselves."""
    return LAB_USER if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name


def ensure_os_user() -> str:
    user = lab_user()
    if user != LAB_USER:
        return user
    try:
        pwd.getpwnam(user)
        return user
    except KeyError:
        pass
    if not shutil.which("useradd"):
        raise LabError(f"cannot create the lab's OS user {user}: useradd not found",
                       f"create an unprivileged user named {user} with a home directory and /bin/sh")
    # A real shell (sshd runs commands through it) and a home (sshd starts sessions there).
    done = subprocess.run(["useradd", "--system", "--user-group", "--create-home", "--home-dir",
                           f"/var/lib/{user}", "--shell", "/bin/sh", "--comment", "drillbook lab", user],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"cannot create the lab's OS user {user}: {done.stderr.strip()}",
                       f"create an unprivileged user named {user} yourself, then re-run drillbook lab up")
    return user


def _chown(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _as_user(user: str, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command as the lab user (root switches, anyone else is already that user)."""
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0 and user != "root":
        entry = pwd.getpwnam(user)
        kwargs = dict(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd="/")
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def _make_dirs(paths: LabPaths, user: str) -> None:
    for directory, mode, owner in ((paths.root, 0o755, None), (paths.secrets, 0o700, None),
                                   (paths.ca, 0o755, None), (paths.data, 0o755, user),
                                   (paths.tls, 0o700, user), (paths.ssh, 0o755, user)):
        directory.mkdir(exist_ok=True)
        os.chmod(directory, mode)
        if owner:
            _chown(directory, owner)


def _check_access(paths: LabPaths, user: str) -> None:
    done = _as_user(user, ["test", "-w", str(paths.data)])
    if done.returncode != 0:
        raise LabError(f"the lab's OS user {user} cannot write to {paths.data}",
                       f"make every parent directory of {paths.project} searchable (chmod o+x), or move the project")


# ----------------------------------------------------------------------------- secrets and keys
def _write_private(path: Path, text: str, owner: str | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    if owner:
        _chown(path, owner)


def _ensure_secrets(paths: LabPaths) -> None:
    import secrets as pysecrets

    for name in ("admin_password", "replication_password", "app_password"):
        if not paths.secret(name).exists():
            _write_private(paths.secret(name), pysecrets.token_urlsafe(24) + "\n")
    if not paths.secret("app_user").exists():
        _write_private(paths.secret("app_user"), APP_LOGINS[0] + "\n")


def make_ca(common_name: str = "drillbook lab CA", days: int = 3650) -> tuple[str, str]:
    """A new CA certificate and key (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def issue_server_certificate(ca_cert_pem: str, ca_key_pem: str, names: list[str] | tuple[str, ...] = ("127.0.0.1", "localhost"),
                             days: int = 365, common_name: str = "drillbook lab postgres") -> tuple[str, str]:
    """A server certificate for ``names`` (IP addresses or DNS names) signed by the CA; (cert, key) PEM."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()).decode())


def _ensure_tls(paths: LabPaths, user: str) -> None:
    ca_cert, ca_key = paths.ca / "ca.crt", paths.ca / "ca.key"
    if not ca_cert.exists() or not ca_key.exists():
        cert, key = make_ca()
        _write_private(ca_key, key)
        ca_cert.write_text(cert)
        os.chmod(ca_cert, 0o644)
    server_cert, server_key = paths.tls / "server.crt", paths.tls / "server.key"
    if not server_cert.exists() or not server_key.exists():
        cert, key = issue_server_certificate(ca_cert.read_text(), ca_key.read_text())
        _write_private(server_key, key, owner=user)  # PostgreSQL insists its key is 0600 and its own
        server_cert.write_text(cert)
        os.chmod(server_cert, 0o644)
        _chown(server_cert, user)


# ----------------------------------------------------------------------------- PostgreSQL configuration
def render_server_conf(paths: LabPaths) -> str:
    """Settings shared by every node, appended to postgresql.conf (Debian's initdb has no -c)."""
    q = pgt.conf_string
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
        f"include_if_exists = {q(pgt.NODE_CONF)}  # per node: port, primary_conninfo", "",
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


def _init_primary(pg: pgt.Postgres, paths: LabPaths, name: str, say: Say) -> None:
    say(f"initdb {name} (PostgreSQL {pg.bin_dir(name)})")
    data = str(paths.node(name))
    admin = pg.credentials("admin")
    q = shlex.quote
    # The password goes through a pipe this shell creates, so the lab user can open /dev/stdin.
    pg.run(name, f"rm -rf {q(data)} && IFS= read -r pw && printf '%s\\n' \"$pw\" | {pg.tool_path(name, 'initdb')} "
                 f"-D {q(data)} -U {q(admin.user)} --pwfile=/dev/stdin -E UTF8 --no-locale --auth=scram-sha-256 "
                 f"-k >/dev/null", what="initdb", input=admin.password + "\n", timeout=300)
    pg.run(name, f"printf '%s' {q(render_server_conf(paths))} >> {q(data)}/postgresql.conf && "
                 f"printf '%s' {q(render_hba(pg.service.replication_user))} > {q(data)}/pg_hba.conf",
           what="write configuration", timeout=30)
    pg.write_node_conf(name, pgt.render_node_conf(pg.node(name).port))
    pg.start(name)


def _create_roles_and_schema(pg: pgt.Postgres, primary: str, say: Say) -> None:
    with pg.connect(primary, login="admin") as conn:
        have = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
        repl = pg.credentials("replication")
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
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.service.database,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(pg.service.database), sql.Identifier(APP_GROUP)))
    if repl.user not in have:
        pg.set_password(repl.user, repl.password)
    with pg.connect(primary, login="admin", dbname=pg.service.database, autocommit=False) as conn:
        if conn.execute("SELECT to_regclass('public.order_lines')").fetchone()[0] is None:
            say("seeding the sample schema (66,000 rows)")
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_GROUP)))
            conn.execute(SAMPLE_SCHEMA)
        conn.commit()


def _ensure_app_login(pg: pgt.Postgres, primary: str, say: Say) -> None:
    """The login in secrets/app_user must work with secrets/app_password: repair an interrupted rotation."""
    creds = pg.credentials("app")
    try:
        with pg.connect(primary):
            return
    except psycopg.OperationalError as exc:
        if not pgt.is_refusal(exc):
            raise
    say(f"setting the password of {creds.user} from .lab/secrets/app_password")
    pg.set_password(creds.user, creds.password)


# ----------------------------------------------------------------------------- repairing the pair
@dataclass(frozen=True)
class DiskFacts:
    initialized: bool
    standby_signal: bool
    fenced: bool
    timeline: int
    checkpoint: int


def disk_facts(pg: pgt.Postgres, name: str) -> DiskFacts:
    d = shlex.quote(pg.data_dir(name))
    # A promotion writes its timeline's history file at once, but pg_control only shows the new
    # timeline after the next checkpoint: a node killed right after promotion would look older.
    out = pg.run(name, f"test -f {d}/PG_VERSION || exit 0; echo initialized; "
                       f"test -f {d}/standby.signal && echo standby; test -f {d}/{pgt.FENCE_MARKER} && echo fenced; "
                       f"ls {d}/pg_wal | sed -n 's/^\\([0-9A-F]\\{{8\\}}\\)\\.history$/history \\1/p'; "
                       f"{pg.tool_path(name, 'pg_controldata')} -D {d} 2>/dev/null | grep -E "
                       f"\"^Latest checkpoint's TimeLineID|^Latest checkpoint location\"", what="pg_controldata",
                 check=False, timeout=30).stdout
    timeline, checkpoint = 0, 0
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("history "):
            timeline = max(timeline, int(key.split()[1], 16))
        elif "TimeLineID" in key and value.strip().isdigit():
            timeline = max(timeline, int(value))
        elif "checkpoint location" in key and "/" in value:
            checkpoint = pgt.parse_lsn(value.strip())
    lines = out.splitlines()
    return DiskFacts("initialized" in lines, "standby" in lines, "fenced" in lines, timeline, checkpoint)


def _bring_up_primary(pg: pgt.Postgres, say: Say) -> str:
    """The node that is (or becomes) the primary: running one, else newest stopped one, else promote."""
    running = {n: pg.role(n) for n in NODES}
    primaries = [n for n in NODES if running[n] == "primary"]
    facts = {n: disk_facts(pg, n) for n in NODES}
    newest = lambda names: max(names, key=lambda n: (facts[n].timeline, facts[n].checkpoint, n == NODES[0]))  # noqa: E731
    if primaries:
        keep = max(primaries, key=lambda n: (pg.state(n).timeline or 0, n == NODES[0]))  # the newest promotion
        for other in primaries:
            if other != keep:
                say(f"{other} is a second primary: fencing it (it will be rebuilt as a standby)")
                pg.fence(other, "second primary found by drillbook lab up")
        return keep
    stopped = [n for n in NODES if facts[n].initialized and not facts[n].fenced and not facts[n].standby_signal]
    if stopped:
        keep = newest(stopped)
        say(f"starting {keep} (primary)")
        pg.start(keep)
        return keep
    standbys = [n for n in NODES if facts[n].initialized and not facts[n].fenced] or \
               [n for n in NODES if facts[n].initialized]
    if not standbys:
        raise LabError("no node of the lab has data", "drillbook lab down --purge, then drillbook lab up")
    keep = newest(standbys)
    say(f"no primary left: promoting {keep}")
    if running[keep] == "down":
        pg.run(keep, f"rm -f {shlex.quote(pg.data_dir(keep))}/{pgt.FENCE_MARKER}", what="clear fence marker")
        pg.start(keep)
    pg.promote(keep)
    return keep


def _ensure_standby(pg: pgt.Postgres, name: str, primary: str, say: Say) -> None:
    facts = disk_facts(pg, name)
    primary_port = pg.node(primary).port
    if facts.initialized and facts.standby_signal and not facts.fenced:
        state = pg.state(name)
        if state.role == "standby":
            try:  # a standby whose primary just came back reconnects within a few seconds
                if pg.wait_streaming(name, timeout=10) == primary_port:
                    return
            except pgt.PostgresError:
                pass
        elif state.role == "down":
            say(f"starting {name} (standby of {primary})")
            pg.configure_standby(name, primary)
            try:
                pg.start(name)
                pg.wait_streaming(name, timeout=15)
                return
            except pgt.PostgresError as exc:
                say(f"{name} does not stream ({exc.message}): rebuilding it")
    why = "creating" if not facts.initialized else ("fenced" if facts.fenced else "not a standby of " + primary)
    say(f"{name}: {why}; building it as a standby of {primary}")
    how = pg.rebuild_standby(name, primary)
    say(f"{name} streams from {primary} ({how})")


# ----------------------------------------------------------------------------- sshd
def sshd_binary() -> str | None:
    """The OpenSSH server to run: ``$DRILLBOOK_LAB_SSHD`` (a path, or ``none``), else the system's."""
    chosen = os.environ.get(SSHD_VAR, "")
    if chosen:
        return None if chosen == "none" or not os.access(chosen, os.X_OK) else chosen
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)), None)


def render_sshd_config(paths: LabPaths, port: int, user: str) -> str:
    ssh = paths.ssh
    return "\n".join([
        "# drillbook lab sshd: loopback only, keys only, one user. Written by `drillbook lab up`.",
        f"Port {port}", "ListenAddress 127.0.0.1", f'HostKey "{ssh / "host_ed25519_key"}"',
        f'PidFile "{ssh / "sshd.pid"}"', f'AuthorizedKeysFile "{ssh / "authorized_keys"}"',
        f"AllowUsers {user}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin no", "UsePAM no",
        # The project may live under any directory (e.g. /tmp); the lab writes its key files itself.
        "StrictModes no", "AllowTcpForwarding no", "X11Forwarding no", "AllowAgentForwarding no",
        "PermitTTY no", "PrintMotd no", "UseDNS no", "LoginGraceTime 20", "MaxStartups 30:50:100",
        f'SetEnv DRILLBOOK_LAB_DIR="{paths.root}"', "",
    ])


def make_ssh_key(comment: str) -> tuple[str, str]:
    """A new ed25519 key: (private key in OpenSSH format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def public_line(private_openssh: str, comment: str = "") -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{public} {comment}".strip()


def known_hosts_line(address: str, port: int, host_public: str) -> str:
    where = address if port == 22 else f"[{address}]:{port}"
    return f"{where} {' '.join(host_public.split()[:2])}"


def _ensure_ssh_files(paths: LabPaths, state: LabState) -> None:
    """Keys exist even without sshd: the environment lists the client key, and runs resolve it."""
    ssh, user = paths.ssh, state.os_user
    client, host = ssh / "client_key", ssh / "host_ed25519_key"
    if not client.exists():
        private, public = make_ssh_key("drillbook-lab-client")
        _write_private(client, private)
        (ssh / "client_key.pub").write_text(public + "\n")
    if not host.exists():
        private, public = make_ssh_key("drillbook-lab-host")
        _write_private(host, private, owner=user)
        (ssh / "host_ed25519_key.pub").write_text(public + "\n")
    authorized = ssh / "authorized_keys"
    current = public_line(client.read_text(), "drillbook-lab-client")
    existing = authorized.read_text() if authorized.exists() else ""
    # The lab's client key must always log in (a key rotation may have been interrupted).
    if current.split()[1] not in existing:
        _write_private(authorized, existing + ("" if not existing or existing.endswith("\n") else "\n") + current + "\n",
                       owner=user)
    (ssh / "known_hosts").write_text(known_hosts_line("127.0.0.1", state.ports.ssh,
                                                      (ssh / "host_ed25519_key.pub").read_text()) + "\n")
    config = ssh / "sshd_config"
    config.write_text(render_sshd_config(paths, state.ports.ssh, user))
    for path in (config, ssh / "known_hosts", ssh / "host_ed25519_key.pub", ssh / "client_key.pub"):
        os.chmod(path, 0o644)


def _sshd_pid(paths: LabPaths) -> int | None:
    """The pid of the lab's sshd if it runs (checked against its command line, not just the pid file)."""
    try:
        pid = int((paths.ssh / "sshd.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if str(paths.ssh / "sshd_config") in cmdline else None


def _ssh_availability(binary: str | None) -> str:
    if binary is not None:
        return "enabled"
    if os.environ.get(SSHD_VAR) == "none":
        return f"unavailable: disabled by {SSHD_VAR}=none"
    if os.environ.get(SSHD_VAR):
        return f"unavailable: {SSHD_VAR}={os.environ[SSHD_VAR]} is not an executable"
    return "unavailable: no OpenSSH server binary (apt-get install openssh-server, or make system-deps as root)"


def _start_sshd(paths: LabPaths, state: LabState, say: Say) -> None:
    binary = sshd_binary()
    state.ssh = _ssh_availability(binary)
    if binary is None:
        if (pid := _sshd_pid(paths)) is not None:
            _stop_pid(pid)
        say(f"ssh: {state.ssh}")
        return
    config = str(paths.ssh / "sshd_config")
    pid = _sshd_pid(paths)
    if pid and _config_unchanged(paths):
        return
    if pid:
        _stop_pid(pid)
    _require_free_port(state.ports.ssh, "ssh", "--ssh-port")
    check = _as_user(state.os_user, [binary, "-t", "-f", config])
    if check.returncode != 0:
        raise LabError(f"sshd refuses the lab's configuration: {check.stderr.strip().splitlines()[-1:]}",
                       f"read {config}")
    started = _as_user(state.os_user, [binary, "-f", config, "-E", str(paths.ssh / "sshd.log")])
    if started.returncode != 0 or not _wait_port(state.ports.ssh, 10):
        raise LabError(f"sshd did not start on 127.0.0.1:{state.ports.ssh}", f"read {paths.ssh / 'sshd.log'}")
    (paths.ssh / ".running_config").write_text((paths.ssh / "sshd_config").read_text())
    say(f"sshd listening on 127.0.0.1:{state.ports.ssh} (login {state.os_user})")


def _config_unchanged(paths: LabPaths) -> bool:
    running = paths.ssh / ".running_config"
    return running.exists() and running.read_text() == (paths.ssh / "sshd_config").read_text()


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return True
        time.sleep(0.05)
    return False


def _require_free_port(port: int, what: str, option: str) -> None:
    if _port_open(port):
        raise LabError(f"port {port} (lab {what}) is already in use by another program",
                       f"stop it, or create the lab on other ports: drillbook lab down --purge; "
                       f"drillbook lab up {option} N (and update parameters/environments/{LAB_ENV}.yaml)")


# ----------------------------------------------------------------------------- status
@dataclass
class LabStatus:
    lab_dir: Path
    ports: LabPorts
    os_user: str
    bin_dir: str
    pg_major: int
    nodes: list[pgt.NodeState] = field(default_factory=list)
    ssh: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        roles = sorted(n.role for n in self.nodes)
        standbys_ok = all(n.streaming for n in self.nodes if n.role == "standby")
        return roles == ["primary", "standby"] and standbys_ok and not self.ssh.startswith("stopped")


def _env_warnings(paths: LabPaths, state: LabState) -> list[str]:
    """Does local.yaml describe the lab that runs? A drill against the wrong ports fails late."""
    from .environments import load_environment

    if not (paths.project / "parameters" / "environments" / f"{LAB_ENV}.yaml").exists():
        return [f"parameters/environments/{LAB_ENV}.yaml is missing: drills cannot reach the lab"]
    try:
        env = load_environment(LAB_ENV, paths.project)
    except DrillbookError as exc:
        return [f"{LAB_ENV}.yaml: {exc.message}"]
    warnings = []
    for svc in env.services.values():
        for node in svc.nodes:
            if node.name in NODES and node.port != state.ports.of(node.name):
                warnings.append(f"{LAB_ENV}.yaml gives {node.name} port {node.port}; the lab uses {state.ports.of(node.name)}")
    ssh_host = env.hosts.get("lab-ssh")
    if ssh_host and ssh_host.port != state.ports.ssh:
        warnings.append(f"{LAB_ENV}.yaml gives lab-ssh port {ssh_host.port}; the lab's sshd uses {state.ports.ssh}")
    if ssh_host and ssh_host.user and ssh_host.user != state.os_user:
        warnings.append(f"{LAB_ENV}.yaml logs in to lab-ssh as {ssh_host.user}; the lab's sshd accepts only "
                        f"{state.os_user} (set hosts.lab-ssh.user: {state.os_user})")
    return warnings


def status(project: Path) -> LabStatus:
    """Roles, timelines, lag and ports of the lab's nodes, and whether sshd runs."""
    paths = LabPaths(project)
    state = load_state(paths)
    if state is None:
        raise LabError(f"no lab in {paths.root}", "drillbook lab up")
    result = LabStatus(paths.root, state.ports, state.os_user, state.bin_dir, state.pg_major)
    with lab_postgres(paths, state) as pg:
        result.nodes = pg.states()
    if state.ssh.startswith("unavailable"):
        result.ssh = state.ssh
    elif _sshd_pid(paths):
        result.ssh = f"running on 127.0.0.1:{state.ports.ssh} (login {state.os_user})"
    else:
        result.ssh = "stopped (drillbook lab up starts it)"
    result.warnings = _env_warnings(paths, state)
    return result


# ----------------------------------------------------------------------------- up / down
def _prepare_state(paths: LabPaths, requested: LabPorts | None, user: str) -> LabState:
    state = load_state(paths)
    if state is None:
        ports = requested or LabPorts.from_env()
        for name in NODES:
            _require_free_port(ports.of(name), name, f"--{name}-port")
        return LabState(ports=ports, os_user=user, created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    if requested and requested != state.ports:
        raise LabError(f"the lab in {paths.root} already uses ports pg1={state.ports.pg1} pg2={state.ports.pg2} "
                       f"ssh={state.ports.ssh}", "drop the port options, or recreate it: drillbook lab down --purge")
    if state.os_user != user:
        raise LabError(f"the lab in {paths.root} belongs to OS user {state.os_user}, not {user}",
                       f"run drillbook lab commands as {'root' if state.os_user == LAB_USER else state.os_user}")
    return state


def up(project: Path, ports: LabPorts | None = None, say: Say = _quiet) -> LabStatus:
    """Create the lab, or bring it back to a healthy primary + streaming standby (+ sshd). Idempotent."""
    paths = LabPaths(project)
    user = ensure_os_user()
    paths.root.mkdir(exist_ok=True)
    state = _prepare_state(paths, ports, user)
    _make_dirs(paths, user)
    _check_access(paths, user)
    _select_binaries(paths, state)
    _ensure_secrets(paths)
    _ensure_tls(paths, user)
    _ensure_ssh_files(paths, state)
    state.ssh = _ssh_availability(sshd_binary())
    save_state(paths, state)
    with lab_postgres(paths, state) as pg:
        if not any(disk_facts(pg, n).initialized for n in NODES):
            _init_primary(pg, paths, NODES[0], say)
        primary = _bring_up_primary(pg, say)
        _create_roles_and_schema(pg, primary, say)
        _ensure_app_login(pg, primary, say)
        for name in NODES:
            if name != primary:
                _ensure_standby(pg, name, primary, say)
    _start_sshd(paths, state, say)
    save_state(paths, state)
    return status(project)


def _stop_node(pg: pgt.Postgres, name: str) -> bool:
    """Stop cleanly if it can, else immediately: down must not leave a server behind."""
    try:
        return pg.stop(name, "fast", timeout=30)
    except pgt.PostgresError:
        return pg.stop(name, "immediate")


def down(project: Path, purge: bool = False, say: Say = _quiet) -> None:
    """Stop sshd, scratch instances and both nodes. ``purge`` then removes ``.lab/``."""
    paths = LabPaths(project)
    if not paths.root.exists():
        say(f"no lab in {paths.root}")
        return
    pid = _sshd_pid(paths)
    if pid:
        _stop_pid(pid)
        say("stopped sshd")
    state = load_state(paths)
    if state is not None and state.bin_dir:
        with lab_postgres(paths, state) as pg:
            for scratch in sorted((paths.data / "scratch").glob("*/postmaster.pid")):
                pg.run(NODES[0], f"{pg.tool_path(NODES[0], 'pg_ctl')} stop -D {shlex.quote(str(scratch.parent))} "
                                 "-m immediate -w", what="stop scratch instance", check=False)
                say(f"stopped scratch instance {scratch.parent.name}")
            for name in NODES:
                if disk_facts(pg, name).initialized and _stop_node(pg, name):
                    say(f"stopped {name}")
    if purge:
        shutil.rmtree(paths.root)
        say(f"removed {paths.root}")
