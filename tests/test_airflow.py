"""Airflow runs the schedule: a real Airflow 3 (its own .venv-airflow, sqlite in the test's
AIRFLOW_HOME) runs the shipped DAG file with `airflow dags test` against the session's lab.

Never skipped: when .venv-airflow is missing it is made here, as `make airflow-venv` does.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DRILLBOOK, FIXTURES, REPO, Project, cli
from labsupport import LabProject, lab_project  # noqa: F401

AIRFLOW_VENV = REPO / ".venv-airflow"
AIRFLOW = AIRFLOW_VENV / "bin" / "airflow"


def ensure_airflow() -> Path:
    """.venv-airflow, made from the pinned requirements-airflow.txt with uv when missing."""
    if (AIRFLOW_VENV / ".installed").is_file() and AIRFLOW.is_file():
        return AIRFLOW
    uv = Path(sys.executable).parent / "uv"
    assert uv.is_file(), "uv is missing from .venv (it is pinned in requirements.txt): run make venv"
    base = getattr(sys, "_base_executable", sys.executable)
    for command in ([str(uv), "venv", "-q", "--allow-existing", "--python", base, str(AIRFLOW_VENV)],
                    [str(uv), "pip", "install", "-q", "--python", str(AIRFLOW_VENV / "bin" / "python"),
                     "-r", str(REPO / "requirements-airflow.txt")]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"could not make .venv-airflow ({' '.join(command[:3])}): {done.stderr[-2000:]}"
    (AIRFLOW_VENV / ".installed").touch()
    return AIRFLOW


class Airflow:
    def __init__(self, home: Path, project: Path, archive: Path) -> None:
        self.archive = archive
        self.env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                    "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "DRILLBOOK_PROJECT": str(project),
                    "DRILLBOOK_BIN": str(DRILLBOOK), "DRILLBOOK_ARCHIVE": str(archive),
                    # The module's runs sign with a key of their own and trust it in a file of their own.
                    "DRILLBOOK_HOME": str(home / "drillbook-home"), "DRILLBOOK_TRUST": str(home / "trust.yaml")}
        self.drillbook_env = {k: self.env[k] for k in ("DRILLBOOK_HOME", "DRILLBOOK_TRUST")}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ensure_airflow()), *args], env=self.env, capture_output=True, text=True,
                              timeout=600)


@pytest.fixture(scope="module")
def airflow(lab_project: LabProject, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:  # noqa: F811
    """Airflow with its database and the lab's pool; the lab's project with a schedule (removed after)."""
    root = lab_project.root
    schedule = root / "parameters" / "schedule.yaml"
    added = root / "notebooks" / "drills" / "check_fails.ipynb"
    shutil.copy(FIXTURES / "notebooks" / "check_fails.ipynb", added)
    # The machine running the tests is busy (two cores shared): the smoke drill's load limit is lifted.
    schedule.write_text("runs:\n  - {drill: smoke, env: local, cron: '*/30 * * * *', parameters: {max_load_per_cpu: 1000}}\n"
                        "  - {drill: check_fails, env: local, cron: '0 3 * * *'}\n")
    # An archive of its own: a freeze here never reaches the other tests' lab runs.
    flow = Airflow(tmp_path_factory.mktemp("airflow-home"), root, tmp_path_factory.mktemp("airflow-archive") / "evidence")
    try:
        for args in (("db", "migrate"), ("pools", "set", "drillbook-local", "1", "drillbook: one drill at a time")):
            done = flow(*args)
            assert done.returncode == 0, f"airflow {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        yield flow
    finally:
        schedule.unlink(missing_ok=True)
        added.unlink(missing_ok=True)


def _records(archive: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((archive / "runs").glob("*/record.json"))]


@pytest.mark.integration
def test_airflow_runs_the_schedule_through_drillbooks_runner(airflow: Airflow, lab_project: LabProject) -> None:  # noqa: F811
    passed = airflow("dags", "test", "drillbook__smoke__local")
    log = passed.stdout + passed.stderr
    assert passed.returncode == 0, log[-4000:]
    (record,) = _records(airflow.archive)
    assert record["drill"] == "smoke" and record["status"] == "passed", log[-4000:]
    bundle = airflow.archive / "runs" / str(record["run_id"])
    # The task's own output ends with the run id and where its evidence is.
    assert f"drillbook run id: {record['run_id']}; evidence: {bundle}" in log
    assert "state=success" in log and "drillbook__smoke__local" in log
    verified = cli(lab_project.root, "verify", "--archive", str(airflow.archive), env=airflow.drillbook_env)
    assert verified.code == 0 and "1 run(s)" in verified.stdout, verified.output

    failed = airflow("dags", "test", "drillbook__check_fails__local")
    log = failed.stdout + failed.stderr
    assert failed.returncode == 1 and "state=failed" in log, log[-4000:]  # failed drill → failed task
    latest = _records(airflow.archive)[-1]
    assert latest["drill"] == "check_fails" and latest["status"] == "failed"
    assert f"drillbook run exited 1 (the run did not pass); drillbook run id: {latest['run_id']}" in log

    frozen = cli(lab_project.root, "freeze", "--env", "local", "--reason", "airflow test", "--archive",
                 str(airflow.archive))
    assert frozen.code == 0, frozen.output
    skipped = airflow("dags", "test", "drillbook__smoke__local")
    log = skipped.stdout + skipped.stderr
    assert skipped.returncode == 0 and "environment local is frozen" in log, log[-4000:]
    assert len(_records(airflow.archive)) == 2  # nothing ran
    skips = list((airflow.archive / "freeze" / "skipped").glob("*.json"))
    assert [json.loads(p.read_text())["scheduler"] for p in skips] == ["airflow"]
    assert cli(lab_project.root, "verify", "--archive", str(airflow.archive), env=airflow.drillbook_env).code == 0


def test_dag_specs_follow_the_schedule_and_production_needs_a_change(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    project.write_env("prod", "production: true\nhosts:\n  here:\n    shell: local\n")
    (project.root / "parameters" / "schedule.yaml").write_text(
        "runs:\n  - {drill: passes, env: local, cron: '@daily', approve: [fault], parameters: {n: [1, 2]}}\n"
        "  - {drill: passes, env: prod, cron: '15 4 * * 1'}\n")
    listed = cli(project, "airflow", "--json")
    assert listed.code == 0, listed.output
    local, prod = json.loads(listed.stdout)["dags"]
    assert (local["dag_id"], local["cron"], local["pool"]) == ("drillbook__passes__local", "0 0 * * *", "drillbook-local")
    assert local["args"] == ["--scheduler", "airflow", "-p", "n=[1, 2]", "--approve", "fault"]
    assert (prod["dag_id"], prod["cron"], prod["production"], prod["pool"]) == (
        "drillbook__passes__prod", "15 4 * * 1", True, "drillbook-prod")
    refused = cli(project, "run", "passes", "--env", "prod", "--scheduler", "airflow")
    assert refused.code == 2 and "needs a change reference; nothing ran" in refused.stderr
    assert project.run_dirs() == []
    printed = cli(project, "airflow")
    assert "airflow pools set drillbook-local 1" in printed.stdout and "airflow pools set drillbook-prod 1" in printed.stdout
