"""``drillbook incident open``: the operator's working copy of a runbook, and where to open it."""
from __future__ import annotations

from typing import Optional

import typer

from .app import app, out

incident_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Incidents: run a runbook from a working copy of its own, never from runbooks/.")
app.add_typer(incident_app, name="incident")


@incident_app.command("open")
def incident_open(
    runbook: str = typer.Argument(..., help="The runbook's name, e.g. postgres-failover (see drillbook list)."),
    env: str = typer.Option(..., "--env", help="The environment the incident is in (see drillbook envs)."),
    severity: Optional[str] = typer.Option(None, help="P0 (worst) to P3; kept in the run's record."),
    incident: Optional[str] = typer.Option(None, help="The incident's id, e.g. INC-42 (default: INC-<UTC time>)."),
) -> None:
    """Copy RUNBOOK to incidents/<id>/ set for --env, beside an incident.json, and print the JupyterLab URL.

    The copy starts as a dry run; the source in runbooks/ is never run or saved by the operator.
    """
    from ..incidents import servers, workcopy

    copy = workcopy.open_incident(runbook, env, severity, incident)
    level = f", severity {copy.severity}" if copy.severity else ""
    out.print(f"incident {copy.incident}{level}: {copy.runbook} on {copy.env} → {copy.relative_notebook}",
              soft_wrap=True, markup=False)
    url = servers.lab_url(copy.notebook)
    if url:
        out.print(f"open {url}", soft_wrap=True, markup=False)
    else:
        out.print(f"no JupyterLab is running for this project: start one with `{servers.start_command(copy.project)}`, "
                  f"then open lab/tree/{copy.relative_notebook} on the URL it prints", soft_wrap=True, markup=False)
    out.print("the copy opens as a dry run: run it top to bottom, then set dry_run = False in its parameters cell "
              "to go live",
              soft_wrap=True, markup=False)
