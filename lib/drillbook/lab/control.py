"""The lab's verbs: ``up`` (create or repair, idempotent), ``status`` and ``down``.

What they do to the pair and to sshd is in ``pg`` and ``sshd``; the package docstring describes the lab.
"""
from __future__ import annotations

import datetime as dt
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError
from ..targets.postgres import Postgres
from ..targets.postgres.results import NodeState, PostgresError
from . import pgbouncer, redis
from .archive import ensure_archive
from .binaries import select_binaries
from .environment import env_warnings, lab_postgres
from .leftovers import remove_stale_tables, unmount_scratch
from .oslevel import check_access, ensure_os_user, make_dirs, require_free_port, stop_pid
from .pg import (
    bring_up_primary,
    create_roles_and_schema,
    disk_facts,
    ensure_app_login,
    ensure_secrets,
    ensure_standby,
    init_primary,
)
from .sshd import ensure_ssh_files, ssh_availability, sshd_binary, sshd_pid, start_sshd
from .state import LAB_USER, NODES, LabPaths, LabPorts, LabState, Say, load_state, save_state
from .tls import ensure_tls


def _quiet(_: str) -> None:
    pass


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
    pgbouncer: str = ""
    redis: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        roles = sorted(n.role for n in self.nodes)
        standbys_ok = all(n.streaming for n in self.nodes if n.role == "standby")
        stopped = any(part.startswith("stopped") for part in (self.ssh, self.pgbouncer, self.redis))
        return roles == ["primary", "standby"] and standbys_ok and not stopped


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
    result.pgbouncer = _describe(state.pgbouncer, pgbouncer.pid(paths), state.ports.pgbouncer)
    result.redis = _describe(state.redis, redis.pid(paths), state.ports.redis)
    result.warnings = env_warnings(paths, state)
    return result


def _describe(availability: str, pid: int | None, port: int) -> str:
    if availability.startswith("unavailable"):
        return availability
    return f"running on 127.0.0.1:{port}" if pid else "stopped (drillbook lab up starts it)"


# ----------------------------------------------------------------------------- up / down
def _prepare_state(paths: LabPaths, requested: LabPorts | None, user: str) -> LabState:
    state = load_state(paths)
    if state is None:
        ports = requested or LabPorts.from_env()
        for name in NODES:
            require_free_port(ports.of(name), name, f"--{name}-port")
        for name in ("pgbouncer", "redis"):
            require_free_port(ports.of(name), name, f"(DRILLBOOK_LAB_{name.upper()}_PORT)")
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
    remove_stale_tables(project, say)  # a partition left by a dead run would keep the pair apart
    state = _prepare_state(paths, ports, user)
    make_dirs(paths, user)
    check_access(paths, user)
    select_binaries(paths, state)
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
        pgbouncer.start(pg, paths, state, primary, say)
        ensure_archive(pg, paths, user, primary, say)
    start_sshd(paths, state, say)
    redis.start(paths, state, say)
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
    remove_stale_tables(project, say)
    pid = sshd_pid(paths)
    if pid:
        stop_pid(pid)
        say("stopped sshd")
    for name, part in (("pgbouncer", pgbouncer), ("redis", redis)):
        if part.stop(paths):
            say(f"stopped {name}")
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
    unmount_scratch(paths, say)  # the disk-full drill's WAL tmpfs, if its run died
    if purge:
        shutil.rmtree(paths.root)
        say(f"removed {paths.root}")
