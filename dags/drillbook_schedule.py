"""drillbook's schedule as Airflow DAGs: one DAG per entry of ``parameters/schedule.yaml``.

Put this file (or a link to it) in Airflow's dags folder on every scheduler and worker. It needs
Airflow 3 and nothing of drillbook's in Airflow's environment: it calls the project's own
``drillbook`` (its ``.venv``), so Airflow's pins never meet JupyterLab's.

* ``DRILLBOOK_PROJECT``: the project checkout (default: the folder above this file's folder)
* ``DRILLBOOK_BIN``: the ``drillbook`` to run (default: ``$DRILLBOOK_PROJECT/.venv/bin/drillbook``)

Each DAG fires on its entry's cron (UTC) and has one task, ``run``, that runs ``drillbook run
DRILL --env ENV --scheduler airflow`` with the entry's parameters and ``approve:`` gates, in pool
``drillbook-ENV`` (create it with one slot: ``drillbook airflow`` prints the command). The task
is the run: passed → success; failed, error or aborted → failed (never retried: a drill is not
idempotent); a frozen environment → skipped (drillbook records the skip); a production entry with
no change reference (``change:`` in the entry, or ``{"change": "CHG-1"}`` as the run's conf) →
failed before anything runs. The log ends with the run id and where the evidence is.
"""
from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

PROJECT = Path(os.environ.get("DRILLBOOK_PROJECT") or Path(__file__).resolve().parent.parent)
DRILLBOOK = os.environ.get("DRILLBOOK_BIN") or str(PROJECT / ".venv" / "bin" / "drillbook")
FROZEN_EXIT = 3  # drillbook run: the environment is frozen, nothing ran


def _environ() -> dict[str, str]:
    return {**os.environ, "DRILLBOOK_PROJECT": str(PROJECT), "COLUMNS": "200"}


def _specs() -> list[dict[str, Any]]:
    """The DAG specs, from drillbook itself (an error here shows as this file's import error)."""
    done = subprocess.run([DRILLBOOK, "airflow", "--json"], cwd=PROJECT, env=_environ(), capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"`drillbook airflow --json` failed in {PROJECT}: {' '.join(done.stderr.split())}")
    return json.loads(done.stdout)["dags"]


def run_drill(spec: dict[str, Any], dag_run: Any = None) -> str:
    """One scheduled run through drillbook's runner; its output goes to the task log as it comes."""
    conf = getattr(dag_run, "conf", None) or {}
    change = conf.get("change") or spec["change"]
    command = [DRILLBOOK, "run", spec["drill"], "--env", spec["env"], *spec["args"]]
    if change:
        command.append(f"--change={change}")  # one argument: a value starting with '-' is still the value
    found: dict[str, str] = {}
    with subprocess.Popen(command, cwd=PROJECT, env=_environ(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            for key in ("run", "evidence"):
                if line.startswith(f"{key}: "):
                    found[key] = line[len(key) + 2:].strip()
        code = process.wait()
    where = f"drillbook run id: {found.get('run', 'none')}; evidence: {found.get('evidence', 'none')}"
    if code == FROZEN_EXIT:
        raise AirflowSkipException(f"environment {spec['env']} is frozen; {where}")
    if code != 0:
        what = "bad input, nothing ran" if code == 2 else "the run did not pass"
        raise AirflowFailException(f"drillbook run exited {code} ({what}); {where}")
    print(where, flush=True)
    return found.get("run", "")


for _spec in _specs():
    with DAG(
        dag_id=_spec["dag_id"], description=f"drillbook: {_spec['description']}", schedule=_spec["cron"],
        start_date=datetime(2024, 1, 1, tzinfo=timezone.utc), catchup=False, max_active_runs=1,
        tags=["drillbook", _spec["env"]], params={"change": _spec["change"] or ""},
    ) as _dag:
        PythonOperator(task_id="run", python_callable=run_drill, op_kwargs={"spec": _spec}, pool=_spec["pool"],
                       retries=0)
    globals()[_spec["dag_id"].replace("-", "_").replace(".", "_")] = _dag
