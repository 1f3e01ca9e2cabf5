"""``drillbook incident open``: the operator's working copy of a runbook, and where to open it."""
from __future__ import annotations

from typing import Optional

import typer

from ..errors import DrillbookError
from .app import app, err, out

incident_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Incidents: run a runbook from a working copy of its own, never from runbooks/.")
app.add_typer(incident_app, name="incident")


@incident_app.command("open")
def incident_open(
    runbook: str = typer.Argument(..., help="The runbook's name, e.g. postgres-failover (see drillbook list)."),
    env: str = typer.Option(..., "--env", help="The environment the incident is in (see drillbook envs)."),
    severity: Optional[str] = typer.Option(None, help="P0 (worst) to P3; kept in the run's record."),
    incident: Optional[str] = typer.Option(None, help="The incident's id, e.g. INC-42 (default: INC-<UTC time>)."),
    freeze_drills: bool = typer.Option(True, "--freeze-drills/--no-freeze-drills",
                                       help="Freeze the environment's drills while the incident is open (the default): "
                                            "scheduled ones skip, running ones are interrupted; runbooks still run."),
) -> None:
    """Copy RUNBOOK to incidents/<id>/ set for --env, beside an incident.json, and print the JupyterLab URL.

    The copy starts as a dry run; the source in runbooks/ is never run or saved by the operator. The
    environment's drills are frozen (``drillbook thaw --env ENV`` once the incident is over).
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
    if freeze_drills:
        _freeze_drills(copy.env, copy.incident, copy.runbook)


def _freeze_drills(env: str, incident: str, runbook: str) -> None:
    """No drill breaks things further during the outage (the kill switch, ``drillbook freeze``); a freeze
    already there (another incident's, or --all) is kept as it is."""
    from ..evidence import freeze
    from ..journal import operator_name

    try:
        found = freeze.frozen(env)
        if found is None:
            found = freeze.freeze(env, f"incident {incident} open ({runbook})", operator_name())
            out.print(f"FROZEN: {found.describe()}; scheduled drills there skip, running ones are interrupted, "
                      f"runbooks still run; `drillbook thaw --env {env}` once the incident is over",
                      soft_wrap=True, markup=False)
        else:
            out.print(f"drills stay frozen: {found.describe()}", soft_wrap=True, markup=False)
    except DrillbookError as exc:  # the working copy is there: the operator can still work, and is told
        err.print(f"warning: drills on {env} are not frozen: {exc.message}; "
                  f"freeze them: drillbook freeze --env {env} --reason 'incident {incident}'", soft_wrap=True, markup=False)
