"""``drillbook airflow``: the schedule as Airflow DAGs (the file to deploy, its pools, or its specs)."""
from __future__ import annotations

import json
import shlex

import typer

from .. import paths
from .app import app, out


@app.command()
def airflow(
    as_json: bool = typer.Option(False, "--json", help="The DAG specs as JSON (what the DAG file reads)."),
) -> None:
    """Print how Airflow runs this project's schedule: the DAG file, one DAG per entry with the
    entry's cron, and the pool (one slot) each environment needs. Each task runs `drillbook run`."""
    from .. import airflow as airflow_mod

    project = paths.project_root()
    specs = airflow_mod.dag_specs(project)
    if as_json:
        typer.echo(json.dumps({"project": str(project), "dags": specs}, indent=1))
        return
    out.print(f"DAG file: {project / airflow_mod.DAG_FILE} (put it, or a link to it, in Airflow's dags folder)",
              markup=False, soft_wrap=True)
    out.print(f"every worker needs this checkout with its .venv (DRILLBOOK_PROJECT={project}) and the archive",
              markup=False, soft_wrap=True)
    for spec in specs:
        note = " (production: needs a change reference)" if spec["production"] else ""
        out.print(f"  {spec['dag_id']}: {spec['cron_text']} in pool {spec['pool']}{note}", markup=False)
    out.print("create the pools once (one slot each: one drill at a time per environment):", markup=False)
    for pool in airflow_mod.pools(specs):
        out.print(f"  airflow pools set {shlex.quote(pool)} 1 {shlex.quote('drillbook: one drill at a time')}",
                  markup=False)
