"""A full WAL filesystem: the drill's scratch instance with its WAL on a small filesystem, and the
``postgres-disk-full`` runbook's diagnosis and safe repair.

Why a scratch instance: the lab's nodes keep ``pg_wal`` in their data directories, and every drill
that rebuilds them (pg_basebackup, pg_rewind) relies on that. So the drill mounts a tmpfs of a few
MiB beside the primary (root only), base-backs the primary up into ``scratch/diskfull-…`` with its
``pg_wal`` on that tmpfs (``--waldir``), leaves a replication slot no one reads, and fills the tmpfs. The runbook acts on any one instance: a node
of the environment, or one outside its node list (``single``), such as this copy.
"""
from __future__ import annotations

import shlex
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from ..faults import inject, stops
from ..faults.base import is_root
from ..faults.disk import Fill, usage
from ..measure.load import WRITES_TABLE
from ..targets.postgres import Postgres
from ..targets.postgres.conventions import FENCE_MARKER, PASSFILE, render_node_conf
from ..targets.postgres.results import PostgresError

if TYPE_CHECKING:
    from ..drill import Drill  # annotations only

SCRATCH = "diskfull"
ABANDONED = "drillbook_abandoned"  # the slot the drill leaves behind, as a decommissioned standby would
# Few, small WAL files and no WAL kept for standbys: the filesystem fills from what the writer writes.
WAL_SETTINGS = "max_wal_size = 32MB\nmin_wal_size = 32MB\nwal_keep_size = 0\narchive_mode = off\n"


def single(pg: Postgres, name: str, host: str, address: str, port: int, data_dir: str) -> Postgres:
    """The same service's settings and credentials, with one node only: an instance outside the
    environment's node list (a scratch copy) that the runbook can diagnose and repair."""
    service = pg.context.service
    model = service.nodes[0].model_copy(update={"name": name, "host": host, "address": address, "port": port,
                                                "data_dir": data_dir})
    return Postgres(service.model_copy(update={"nodes": [model]}), shell=pg.context.open_shell,
                    secret=pg.context.secret, project=pg.context.project, name=f"{pg.context.name}-{name}",
                    redactor=pg.context.redactor)


@dataclass
class WalScratch:
    """The drill's scratch copy: its data directory, the tmpfs its WAL lives on, and its service."""

    pg: Postgres
    node: str
    host: str
    data_dir: str
    mount: str
    port: int


def not_applicable(drill: Drill, pg: Postgres, primary: str) -> str | None:
    """Why the scratch cannot be made here (mounting a tmpfs needs root), or None."""
    host = pg.context.node(primary).host
    return None if is_root(drill.shell(host)) else f"mounting a filesystem for the WAL needs root on {host}"


def plan(pg: Postgres, primary: str, port: int, tag: str) -> WalScratch:
    """Where the copy goes (nothing is made yet): beside the primary's data directory, in scratch/."""
    spec = pg.context.node(primary)
    parent = Path(pg.context.data_dir(primary)).parent / "scratch"
    data, mount = str(parent / f"{SCRATCH}-{tag}"), str(parent / f"{SCRATCH}-{tag}-wal")
    return WalScratch(single(pg, f"{SCRATCH}-{tag}", spec.host, spec.address, port, data), f"{SCRATCH}-{tag}",
                      spec.host, data, mount, port)


def create(pg: Postgres, primary: str, scratch: WalScratch, size_mb: int) -> WalScratch:
    """Mount a tmpfs of ``size_mb`` MiB, base-backup the primary into the copy with its ``pg_wal``
    on that tmpfs, start it, and leave a replication slot no one reads."""
    d, m = shlex.quote(scratch.data_dir), shlex.quote(scratch.mount)
    pg.servers.run(primary, f"mkdir -p {m}", what="make the mount point", timeout=30)  # as the owner: scratch/ stays theirs
    pg.servers.shell(scratch.host).run(f"mount -t tmpfs -o size={int(size_mb)}m,mode=0700 drillbook-wal {m} && "
                                       f"chown {shlex.quote(pg.servers.owner(primary))} {m}", timeout=60, check=True)
    info, password = pg.connections.source_conninfo(primary, "replication")
    basebackup = pg.servers.tool_path(primary, "pg_basebackup")
    pg.servers.run(primary, f"IFS= read -r PGPASSWORD && export PGPASSWORD && rm -rf {d} && {basebackup} -D {d} "
                            f"--waldir={m}/pg_wal -d {shlex.quote(info)} -X stream -c fast -w && "
                            f"rm -f {d}/standby.signal {d}/{FENCE_MARKER} {d}/{PASSFILE}",
                   what="pg_basebackup into the copy", input=password + "\n", timeout=600)
    scratch.pg.servers.write_node_conf(scratch.node, render_node_conf(scratch.port) + WAL_SETTINGS)
    scratch.pg.servers.start(scratch.node)
    # The classic cause: a slot nobody reads any more keeps every WAL file from being recycled.
    scratch.pg.connections.query(scratch.node, "SELECT pg_create_physical_replication_slot(%s, true)", (ABANDONED,))
    return scratch


def remove(pg: Postgres, primary: str, scratch: WalScratch) -> str:
    """Stop the copy, unmount its WAL filesystem, remove it: whatever part of it exists."""
    d, m = shlex.quote(scratch.data_dir), shlex.quote(scratch.mount)
    pg_ctl = pg.servers.tool_path(primary, "pg_ctl")
    pg.servers.run(primary, f"test -f {d}/postmaster.pid && {pg_ctl} stop -D {d} -m immediate -w -t 60 >/dev/null 2>&1; "
                            "true", what="stop the scratch instance", check=False, timeout=90)
    pg.servers.shell(scratch.host).run(f"if mountpoint -q {m}; then umount {m}; fi; rm -rf {d} {d}.log && "
                                       f"{{ rmdir {m} 2>/dev/null || test ! -e {m}; }}", timeout=120, check=True)
    return f"removed {scratch.data_dir} and its WAL filesystem"


def push_wal(scratch: WalScratch, timeout: float = 60.0) -> str:
    """What a burst of writes does to a full WAL filesystem: switch to new WAL files (each needs
    room) until the server stops accepting writes; returns what it answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with scratch.pg.connections.connect(scratch.node, login="admin") as conn:
                conn.execute("SELECT pg_switch_wal()")
        except psycopg.Error as exc:
            return f"writes refused: {str(exc).strip().splitlines()[0][:200]}"
        time.sleep(0.05)
    raise PostgresError(f"the scratch instance still accepts writes after {timeout:g} s of WAL switches",
                        "the WAL filesystem is not full: check the fill step")


# ----------------------------------------------------------------------------- the runbook's side
def wal_dir(pg: Postgres, node: str) -> str:
    """Where the node's WAL really lives (``pg_wal`` may be a link to another filesystem)."""
    d = shlex.quote(pg.context.data_dir(node))
    return pg.servers.run(node, f"readlink -f {d}/pg_wal", what="find pg_wal", timeout=30).stdout.strip()


def filesystem(pg: Postgres, node: str) -> str:
    """Which filesystem is full: the WAL's and the data directory's, as df sees them."""
    shell = pg.servers.shell(pg.context.node(node).host)
    lines = []
    for what, path in (("WAL", wal_dir(pg, node)), ("data", pg.context.data_dir(node))):
        fs = usage(shell, path)
        lines.append(f"{what} {path}: filesystem {fs.mount}, {fs.used * 100 / max(fs.size, 1):.1f} % used, "
                     f"{fs.available} bytes free")
    return "\n".join(lines)


def strangers(pg: Postgres, node: str) -> list[str]:
    """Files on the WAL filesystem that are not PostgreSQL's: outside ``pg_wal`` and the data
    directory, with their sizes (these, and only these, can go without asking PostgreSQL)."""
    shell = pg.servers.shell(pg.context.node(node).host)
    wal = wal_dir(pg, node)
    mount = usage(shell, wal).mount
    data = str(Path(pg.context.data_dir(node)).resolve())
    if mount in ("/", data) or data.startswith(mount.rstrip("/") + "/"):
        return []  # the WAL shares a filesystem with the data or the system: nothing here is a stranger
    out = shell.run(f"find {shlex.quote(mount)} -xdev -type f ! -path {shlex.quote(wal + '/*')} -printf '%s %p\\n'",
                    timeout=60).stdout
    return [line for line in out.splitlines() if line.strip()]


def retention(pg: Postgres, node: str) -> str:
    """What keeps WAL: the settings (read from the configuration, also while the server is down) and the slots."""
    d = shlex.quote(pg.context.data_dir(node))
    postgres = pg.servers.tool_path(node, "postgres")
    settings = []
    for name in ("max_wal_size", "min_wal_size", "wal_keep_size", "max_slot_wal_keep_size", "archive_mode"):
        value = pg.servers.run(node, f"{postgres} -D {d} -C {name}", what=f"read {name}", check=False, timeout=30)
        settings.append(f"{name} = {value.stdout.strip() or '?'}")
    slots = pg.servers.run(node, f"ls {d}/pg_replslot", what="list slots", check=False, timeout=30).stdout.split()
    return "; ".join(settings) + f"; replication slots on disk: {', '.join(slots) or 'none'}"


def remove_strangers(pg: Postgres, node: str) -> str:
    """Remove the files on the WAL filesystem that are not PostgreSQL's (never a WAL file)."""
    found = strangers(pg, node)
    shell = pg.servers.shell(pg.context.node(node).host)
    for line in found:
        shell.run(["rm", "-f", "--", line.split(" ", 1)[1]], timeout=30, check=True)
    return f"removed {len(found)} file(s): " + ", ".join(line.split(" ", 1)[1] for line in found) if found else \
        "nothing to remove"


def inactive_slots(pg: Postgres, node: str) -> list[str]:
    rows = pg.connections.query(node, "SELECT slot_name FROM pg_replication_slots WHERE NOT active ORDER BY 1")
    return [r[0] for r in rows]


def drop_inactive_slots(pg: Postgres, node: str) -> str:
    """Drop the slots no one reads (a standby that used one must then be rebuilt), then checkpoint
    so the WAL they held back is recycled."""
    slots = inactive_slots(pg, node)
    for slot in slots:
        pg.connections.query(node, "SELECT pg_drop_replication_slot(%s)", (slot,))
    pg.connections.query(node, "CHECKPOINT")
    return f"dropped {', '.join(slots)}; checkpointed" if slots else "no inactive slot; checkpointed"


def start_if_down(pg: Postgres, node: str) -> str:
    if pg.servers.is_running(node):
        return f"{node} was running"
    pg.servers.start(node)
    return f"{node} started"


def verify_write(pg: Postgres, node: str, tag: str) -> str:
    with pg.connections.connect(node) as conn:
        conn.execute(f"INSERT INTO {WRITES_TABLE} (run, seq) VALUES (%s, 0)", (tag,))
        conn.execute(f"DELETE FROM {WRITES_TABLE} WHERE run = %s", (tag,))
    return f"{node} committed a write"



def target(pg: Postgres, node: str | None, host: str | None, port: int | None, data_dir: str | None,
           address: str = "127.0.0.1") -> tuple[Postgres, str]:
    """The instance the runbook acts on: one outside the node list when ``data_dir`` is given (with
    ``host`` and ``port``), else ``node``, else the primary, else the one node that is down."""
    if data_dir:
        if not host or not port:
            raise PostgresError("an instance outside the node list needs host, port and data_dir",
                                "pass host='…', port=…, data_dir='…' (or node='NAME' of the environment)")
        name = node or "instance"
        return single(pg, name, host, address, int(port), data_dir), name
    if node:
        pg.context.node(node)  # a node of the environment, else a clear error
        return pg, node
    roles = pg.replication.roles()
    primaries = [n for n, r in roles.items() if r == "primary"]
    down = [n for n, r in roles.items() if r == "down"]
    if primaries or len(down) == 1:
        return pg, (primaries or down)[0]
    raise PostgresError(f"cannot tell which node to repair (roles: {roles})", "pass node='NAME'")


def accepts_connections(pg: Postgres, node: str) -> str:
    """Read-only: can a client connect, and is it a primary?"""
    try:
        recovery = pg.connections.query(node, "SELECT pg_is_in_recovery()")[0][0]
    except (psycopg.Error, PostgresError) as exc:
        return f"{node} refuses connections: {str(exc).strip().splitlines()[0][:200]}"
    return f"{node} accepts connections ({'a standby' if recovery else 'a primary'})"


def server_log(pg: Postgres, node: str, lines: int = 5) -> str:
    """The last lines of the node's server log that name a full disk (the PANIC says which file)."""
    log = shlex.quote(pg.context.data_dir(node) + ".log")
    out = pg.servers.run(node, f"grep -i 'no space left' {log} | tail -n {int(lines)}", what="read the server log",
                         check=False, timeout=30).stdout.strip()
    return out or "no 'No space left on device' in the server log"


# ----------------------------------------------------------------------------- the drill's measures
def record_outcome(drill: Drill, load: Any, start: str = "fault") -> None:
    """Writes refused after the fault, and the time from the first refused write to the first write
    accepted after the last refusal (what the application lived through)."""
    load.stop()
    t0 = load.marks[start]
    errors = [at for at, _ in (load.writer.errors if load.writer else []) if at >= t0]
    drill.measure("writes_refused", len(errors), unit="writes", detail="write attempts that failed after the disk filled")
    drill.check("writes were refused while the WAL filesystem was full", bool(errors), f"{len(errors)} refused")
    if not errors:
        return
    back = [a.at for a in load.acks if a.at > errors[-1]]
    drill.check("writes were accepted again", bool(back), f"after the last refusal at +{errors[-1] - t0:.2f} s")
    if back:
        drill.measure("writes_back_seconds", round(back[0] - errors[0], 3), objective="rto_seconds",
                      detail="first refused write → first write accepted after the last refusal")


def check_repaired(drill: Drill, scratch: WalScratch, fill_file: str | None) -> None:
    """After the runbook: the reserved file is gone, no inactive slot is left, and a write commits."""
    shell = scratch.pg.servers.shell(scratch.host)
    gone = fill_file is None or not shell.run(["test", "-e", fill_file], timeout=15).ok
    drill.check("the runbook removed the file that filled the WAL filesystem", gone, fill_file or "")
    drill.check("no inactive replication slot is left", not inactive_slots(scratch.pg, scratch.node))
    fs = usage(shell, scratch.mount)
    drill.check("the WAL filesystem has room again", fs.available > 0, f"{fs.available} bytes free on {fs.mount}")


# ----------------------------------------------------------------------------- the drill's steps
def make_scratch(drill: Drill, pg: Postgres, primary: str, size_mb: int) -> WalScratch | None:
    """The copy as a mutating step; its removal is registered first (it removes whatever part exists)."""
    scratch = plan(pg, primary, _free_port(), uuid.uuid4().hex[:8])
    drill.cleanup(lambda: remove(pg, primary, scratch), "remove the scratch copy and its WAL filesystem")
    return drill.step(f"Copy {primary} into a scratch instance with its WAL on a {size_mb} MiB tmpfs",
                      lambda: create(pg, primary, scratch, size_mb), mutating=True,
                      plan=f"mount a tmpfs of {size_mb} MiB beside {primary}, pg_basebackup {primary} into a copy whose "
                           "pg_wal is on it, start the copy, leave a replication slot no one reads")


def fill_wal(drill: Drill, scratch: WalScratch, load: Any, outage_factor: float) -> tuple[Fill, stops.Watch | None]:
    """The fault: fill the copy's WAL filesystem (heal registered first), watched by an outage
    bound; then WAL keeps coming until the server refuses writes."""
    fill = Fill(scratch.mount, percent=100, max_bytes=1 << 30, tag=scratch.node)
    active = inject(drill, fill, host=scratch.host)
    load.mark("fault")
    if active is None:
        return fill, None
    rto = drill.env.objectives.get("rto_seconds", 30)
    watch = stops.Watch(drill, [stops.Outage(load, outage_factor, rto)], faults=[active]).start()
    drill.cleanup(watch.stop, "stop watching the stop conditions", mutating=False)
    print("stop condition: " + watch.conditions[0].describe())
    print(drill.step("Keep writing WAL until the server refuses writes", lambda: push_wal(scratch), mutating=True,
                     plan="switch to new WAL files (as a burst of writes would) until a write is refused"))
    return fill, watch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
