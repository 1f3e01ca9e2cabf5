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

Modules: ``lab_state`` (ports, paths, lab.json), ``lab_os`` (the OS user, private files, loopback
ports), ``lab_binaries``, ``lab_tls`` (CA, server certificate), ``lab_pg`` (passwords,
configuration, roles, sample data, repairing the pair) and ``lab_ssh`` (sshd, keys). This module
holds the verbs (``up``, ``status``, ``down``) and the environment the lab implies; every public
name of the lab is importable from here.
"""
from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .environments import validate_environment
from .errors import DrillbookError, LabError
from .lab_binaries import (REQUIRED_TOOLS, binary_candidates, choose_binaries, pg_major, supports_tls,
                           wheel_binaries)
from .lab_os import check_access, ensure_os_user, lab_user, make_dirs, port_open, require_free_port, stop_pid
from .lab_pg import (APP_GROUP, APP_LOGINS, SAMPLE_ROWS, SAMPLE_SCHEMA, DiskFacts, bring_up_primary,
                     create_roles_and_schema, disk_facts, ensure_app_login, ensure_secrets, ensure_standby, init_primary,
                     render_hba, render_server_conf)
from .lab_ssh import (SSHD_VAR, ensure_ssh_files, known_hosts_line, make_ssh_key, public_line, render_sshd_config,
                      ssh_availability, sshd_binary, sshd_pid, start_sshd)
from .lab_state import LAB_ENV, LAB_USER, NODES, PORT_VARS, LabPaths, LabPorts, LabState, Say, load_state, save_state
from .lab_tls import ensure_tls, issue_server_certificate, make_ca
from .secrets import Redactor
from .shell import LocalShell
from .targets.postgres import Postgres
from .targets.postgres.results import NodeState, PostgresError
from .yamlfile import dump_yaml

# The names these helpers had before they moved to their own modules (the tests use them).
_port_open, _ssh_availability = port_open, ssh_availability


def _quiet(_: str) -> None:
    pass


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
    return "# The embedded lab, started by `drillbook lab up`.\n" + dump_yaml(data)


def lab_postgres(paths: LabPaths, state: LabState, redactor: Redactor | None = None) -> Postgres:
    """The lab's service as a drill target, with local shells (switching to the lab's OS user)."""
    env = validate_environment(environment_data(state.ports, state.os_user), paths.project / "parameters" / "lab.yaml")
    redactor = redactor or Redactor()

    def secret(ref: str) -> str:
        from .secrets import SecretRef

        value = SecretRef.parse(ref).resolve(paths.project)
        redactor.add(ref, value)
        return value

    return Postgres(env.services["postgres"], shell=lambda host: LocalShell(host, redactor), secret=secret,
                    project=paths.project, redactor=redactor)


# ----------------------------------------------------------------------------- binaries
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


# ----------------------------------------------------------------------------- status
@dataclass
class LabStatus:
    lab_dir: Path
    ports: LabPorts
    os_user: str
    bin_dir: str
    pg_major: int
    nodes: list[NodeState] = field(default_factory=list)
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
        result.nodes = pg.replication.states()
    if state.ssh.startswith("unavailable"):
        result.ssh = state.ssh
    elif sshd_pid(paths):
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
            require_free_port(ports.of(name), name, f"--{name}-port")
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
    make_dirs(paths, user)
    check_access(paths, user)
    _select_binaries(paths, state)
    ensure_secrets(paths)
    ensure_tls(paths, user)
    ensure_ssh_files(paths, state)
    state.ssh = ssh_availability(sshd_binary())
    save_state(paths, state)
    with lab_postgres(paths, state) as pg:
        if not any(disk_facts(pg, n).initialized for n in NODES):
            init_primary(pg, paths, NODES[0], say)
        primary = bring_up_primary(pg, say)
        create_roles_and_schema(pg, primary, say)
        ensure_app_login(pg, primary, say)
        for name in NODES:
            if name != primary:
                ensure_standby(pg, name, primary, say)
    start_sshd(paths, state, say)
    save_state(paths, state)
    return status(project)


def _stop_node(pg: Postgres, name: str) -> bool:
    """Stop cleanly if it can, else immediately: down must not leave a server behind."""
    try:
        return pg.servers.stop(name, "fast", timeout=30)
    except PostgresError:
        return pg.servers.stop(name, "immediate")


def down(project: Path, purge: bool = False, say: Say = _quiet) -> None:
    """Stop sshd, scratch instances and both nodes. ``purge`` then removes ``.lab/``."""
    paths = LabPaths(project)
    if not paths.root.exists():
        say(f"no lab in {paths.root}")
        return
    pid = sshd_pid(paths)
    if pid:
        stop_pid(pid)
        say("stopped sshd")
    state = load_state(paths)
    if state is not None and state.bin_dir:
        with lab_postgres(paths, state) as pg:
            for scratch in sorted((paths.data / "scratch").glob("*/postmaster.pid")):
                pg_ctl = pg.servers.tool_path(NODES[0], "pg_ctl")
                pg.servers.run(NODES[0], f"{pg_ctl} stop -D {shlex.quote(str(scratch.parent))} -m immediate -w",
                               what="stop scratch instance", check=False)
                say(f"stopped scratch instance {scratch.parent.name}")
            for name in NODES:
                if disk_facts(pg, name).initialized and _stop_node(pg, name):
                    say(f"stopped {name}")
    if purge:
        shutil.rmtree(paths.root)
        say(f"removed {paths.root}")


__all__ = ["APP_GROUP", "APP_LOGINS", "LAB_ENV", "LAB_USER", "NODES", "PORT_VARS", "REQUIRED_TOOLS", "SAMPLE_ROWS",
           "SAMPLE_SCHEMA", "SSHD_VAR", "DiskFacts", "LabPaths", "LabPorts", "LabState", "LabStatus", "Say",
           "binary_candidates", "choose_binaries", "disk_facts", "down", "ensure_os_user", "environment_data",
           "environment_yaml", "issue_server_certificate", "known_hosts_line", "lab_postgres", "lab_user",
           "load_state", "make_ca", "make_ssh_key", "pg_major", "public_line", "render_hba", "render_server_conf",
           "render_sshd_config", "save_state", "sshd_binary", "status", "supports_tls", "up", "wheel_binaries"]
