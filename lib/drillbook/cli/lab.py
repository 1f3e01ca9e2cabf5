"""``drillbook lab up|status|down``: the embedded lab (PostgreSQL pair and sshd on loopback)."""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Optional

import typer

from .. import paths
from .app import app, err, out, table

if TYPE_CHECKING:  # annotations only: the lab loads the PostgreSQL target
    from ..lab import LabStatus
    from ..targets.postgres.results import NodeState

lab_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="The embedded lab: a real PostgreSQL primary + streaming standby (and sshd) on 127.0.0.1, "
                           "under .lab/, described by parameters/environments/local.yaml.")
app.add_typer(lab_app, name="lab")


@lab_app.command("up")
def lab_up(
    pg1_port: Optional[int] = typer.Option(None, envvar="DRILLBOOK_LAB_PG1_PORT", help="Port of node pg1 (default 55432); chosen when the lab is created."),
    pg2_port: Optional[int] = typer.Option(None, envvar="DRILLBOOK_LAB_PG2_PORT", help="Port of node pg2 (default 55433)."),
    ssh_port: Optional[int] = typer.Option(None, envvar="DRILLBOOK_LAB_SSH_PORT", help="Port of the lab's sshd (default 55422)."),
) -> None:
    """Create the lab, or repair it (idempotent): start stopped nodes, rebuild a fenced one, start sshd."""
    from .. import lab

    given = any(p is not None for p in (pg1_port, pg2_port, ssh_port))
    ports = lab.LabPorts.from_env(pg1=pg1_port, pg2=pg2_port, ssh=ssh_port) if given else None
    with _lab_lock("lab up"):
        report = lab.up(paths.project_root(), ports, say=lambda line: err.print(f"lab: {line}", soft_wrap=True))
    _print_lab(report)


@lab_app.command("status")
def lab_status() -> None:
    """Show each node's role, timeline, replication lag and port, and sshd. Exit 1 when not healthy."""
    from .. import lab

    report = lab.status(paths.project_root())
    _print_lab(report)
    if not report.healthy:
        raise typer.Exit(1)


@lab_app.command("down")
def lab_down(purge: bool = typer.Option(False, "--purge", help="Also delete .lab/ (data, secrets, keys).")) -> None:
    """Stop everything the lab started (nodes, scratch instances, sshd); remove nothing unless --purge."""
    from .. import lab

    with _lab_lock("lab down"):
        lab.down(paths.project_root(), purge, say=lambda line: out.print(f"lab: {line}", soft_wrap=True))


def _lag_text(node: NodeState) -> str | None:
    if node.lag_bytes is None:
        return None
    return f"{node.lag_bytes} B" + (f", {node.lag_seconds:.3f} s" if node.lag_seconds is not None else "")


def _lab_lock(what: str) -> AbstractContextManager[None]:
    """The lab is environment 'local': repairing or stopping it must wait for a drill acting on it."""
    from ..runner import locks

    return locks.hold(paths.state_dir(), "local", what,
                      hint=f"wait for that run to finish, then run drillbook {what} again")


def _print_lab(report: LabStatus) -> None:
    from rich.markup import escape

    colours = {"primary": "green", "standby": "cyan", "down": "red"}
    rows = []
    for n in report.nodes:
        notes = ", ".join(filter(None, ["fenced" if n.fenced else "", "not streaming" if n.streaming is False else "",
                                        n.detail if n.role == "down" else ""]))
        rows.append([n.name, f"[{colours.get(n.role, 'white')}]{n.role}[/]", f"{n.address}:{n.port}", n.timeline,
                     n.upstream_port, _lag_text(n), escape(notes)])
    out.print(table(f"Lab {report.lab_dir} (PostgreSQL {report.pg_major}, servers run as {report.os_user})",
                    ["node", "role", "address", "timeline", "streams from", "lag", "notes"], rows))
    out.print(f"ssh: {escape(report.ssh)}", soft_wrap=True)
    out.print(f"pgbouncer: {escape(report.pgbouncer)}; redis: {escape(report.redis)}", soft_wrap=True)
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    state = "[green]healthy[/green]" if report.healthy else "[red]not healthy[/red] (drillbook lab up repairs it)"
    out.print(f"lab: {state}")
