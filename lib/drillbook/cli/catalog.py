"""Verbs about what can run and where: ``list``, ``envs``, ``lint``, ``new``."""
from __future__ import annotations

from typing import Optional

import typer

from .app import app, out, table


@app.command("list")
def list_(kind: Optional[str] = typer.Option(None, help="Only 'runbook' or 'drill'.")) -> None:
    """List the runbooks and drills in the catalog."""
    from ..config import catalog

    rows = [[e.name, e.kind, e.meta.title, e.meta.owner, e.meta.schedule or "on demand",
             ", ".join(e.meta.controls)] for e in catalog.load_catalog() if kind in (None, e.kind)]
    out.print(table("Catalog", ["name", "kind", "title", "owner", "schedule", "controls"], rows))


@app.command()
def envs() -> None:
    """List the environments in parameters/environments/."""
    from ..config import environments

    rows = []
    for env in environments.load_environments():
        objectives = ", ".join(f"{k}={v:g}" for k, v in env.objectives.items())
        rows.append([env.name, "yes" if env.production else "no", ", ".join(env.hosts),
                     ", ".join(env.services), objectives, env.description])
    out.print(table("Environments", ["name", "production", "hosts", "services", "objectives", "description"], rows))


@app.command()
def lint() -> None:
    """Check every notebook and environment: parameters cell, kernelspec, no outputs, metadata, parameters."""
    from ..config import lint as linting

    problems = linting.lint_project()
    for problem in problems:
        out.print(f"[red]✗[/red] {problem}")
    if problems:
        out.print(f"{len(problems)} problem(s)")
        raise typer.Exit(1)
    out.print("lint: all notebooks and environments are clean")


@app.command()
def new(
    name: str = typer.Argument(..., help="File name without .ipynb, e.g. pool-exhausted."),
    kind: str = typer.Option("runbook", help="'runbook' (runbooks/) or 'drill' (notebooks/drills/)."),
    title: str = typer.Option(..., help="Title shown in the catalog and on the site."),
    owner: str = typer.Option(..., help="Team or person who answers for it."),
) -> None:
    """Create a runbook or drill from the template in notebooks/templates/."""
    from ..config.templates import new_notebook

    path = new_notebook(name, kind, title, owner)
    out.print(f"created {path}; open it in JupyterLab, then `drillbook lint`", soft_wrap=True)
