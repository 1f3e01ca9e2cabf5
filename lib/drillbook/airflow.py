"""The schedule as Airflow sees it: one DAG per entry of ``parameters/schedule.yaml``.

``dags/drillbook_schedule.py`` (shipped with the project, run by Airflow in its own virtual
environment) asks ``drillbook airflow --json`` for these specs at parse time, so the schedule is
read and checked by drillbook's own code, never re-parsed in the DAG file. Each DAG has one task
that runs ``drillbook run`` (this project's runner: evidence, gates, locks and scrubbing are the
same as on the command line) in the environment's pool, which has one slot: one drill at a time
per environment across all workers, with no lock of ours between machines.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import paths
from .config import schedule
from .config.environments import load_environment

DAG_FILE = "dags/drillbook_schedule.py"


def dag_id(entry: schedule.Entry) -> str:
    """``drillbook__<drill>__<env>``: Airflow ids allow letters, digits, '_', '-' and '.'."""
    return f"drillbook__{re.sub(r'[^A-Za-z0-9_.-]+', '-', entry.drill)}__{entry.env}"


def pool_name(env: str) -> str:
    return f"drillbook-{env}"


def _parameter(name: str, value: Any) -> str:
    """``-p name=value`` as the command line coerces it (YAML flow for lists and mappings)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"{name}={text}"


def run_arguments(entry: schedule.Entry) -> list[str]:
    """What the task passes to ``drillbook run`` after the drill and environment."""
    args = ["--scheduler", "airflow"]
    for name, value in entry.parameters.items():
        args += ["-p", _parameter(str(name), value)]
    for gate in entry.approve:
        args += ["--approve", gate]
    return args


def dag_specs(project: Path | None = None) -> list[dict[str, Any]]:
    """One spec per schedule entry: everything the DAG file needs, nothing it must work out."""
    project = project or paths.project_root()
    specs = []
    for entry in schedule.load_schedule(project):
        env = load_environment(entry.env, project)
        specs.append({
            "dag_id": dag_id(entry), "drill": entry.drill, "env": entry.env, "cron": entry.cron.expression,
            "cron_text": entry.cron.text, "pool": pool_name(entry.env), "production": env.production,
            "change": entry.change, "args": run_arguments(entry), "description": f"{entry.drill} on {entry.env}",
        })
    return specs


def pools(specs: list[dict[str, Any]]) -> list[str]:
    """The pools the DAGs need, each with one slot (``airflow pools set NAME 1 DESCRIPTION``)."""
    return sorted({spec["pool"] for spec in specs})
