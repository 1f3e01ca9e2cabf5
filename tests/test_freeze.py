"""The kill switch: `drillbook freeze` interrupts running drills (cleanups run, evidence says why),
refuses new ones (scheduled ones recorded as `frozen` skips) until `drillbook thaw`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DRILLBOOK, REPO, Project, cli
from drillbook.evidence import freeze
from drillbook.site.build import generate


def _records(project: Project) -> list[dict[str, object]]:
    return [json.loads((run / "record.json").read_text()) for run in project.run_dirs()]


def _wait_for(path: Path, process: subprocess.Popen[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)


@pytest.mark.integration
def test_freeze_interrupts_a_running_drill_and_its_evidence_says_why(project: Project, tmp_path: Path) -> None:
    project.add_notebook("slow.ipynb")
    marker = tmp_path / "marker"
    running = subprocess.Popen([str(DRILLBOOK), "run", "slow", "--env", "local", "-p", f"marker_path={marker}",
                                "-p", "seconds=300"], cwd=project.root, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})
    _wait_for(Path(f"{marker}.started"), running)
    frozen = cli(project, "freeze", "--env", "local", "--reason", "outage INC-42: primary unreachable")
    assert frozen.code == 0 and "FROZEN: environment 'local' is frozen by" in frozen.stdout, frozen.output
    out, err = running.communicate(timeout=240)  # the freeze, not the 300 s step, ends it
    assert running.returncode == 1, out + err
    assert marker.read_text() == "cleaned"  # the drill's cleanup ran
    (record,) = _records(project)
    assert record["status"] == "aborted"
    assert "interrupted because environment 'local' is frozen by" in str(record["reason"])
    assert "outage INC-42: primary unreachable" in str(record["reason"])
    assert cli(project, "verify").code == 0  # the freeze folder is not evidence and breaks nothing


def test_a_frozen_environment_refuses_runs_and_scheduled_runs_record_a_skip(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    (project.root / "parameters" / "schedule.yaml").write_text("runs:\n  - {drill: passes, env: local, cron: '@daily'}\n")
    assert cli(project, "freeze", "--all", "--reason", "change freeze").code == 0
    refused = cli(project, "run", "passes", "--env", "local")
    assert refused.code == 3 and project.run_dirs() == []
    assert refused.stderr.strip().splitlines() == [
        f"error: not started: all environments are frozen by {freeze.active(project.archive)[0].by} since "
        f"{freeze.active(project.archive)[0].at}: change freeze (drillbook thaw --all lifts it)"]
    for _ in range(2):  # cron calls every few minutes: the skip is recorded once per firing
        due = cli(project, "run", "--due")
        assert due.code == 0 and "skipped passes@local: all environments are frozen" in due.stderr, due.output
    by_airflow = cli(project, "run", "passes", "--env", "local", "--scheduler", "airflow")
    assert by_airflow.code == 3 and "SKIPPED passes on local" in by_airflow.stdout
    skips = freeze.skipped(project.archive)
    assert [(s["status"], s["scheduler"], s["drill"], s["env"]) for s in skips] == [
        ("frozen", "run --due", "passes", "local"), ("frozen", "airflow", "passes", "local")]
    assert skips[0]["freeze"]["reason"] == "change freeze"  # type: ignore[index]
    assert project.run_dirs() == []

    status = cli(project, "status")
    assert "FROZEN all environments are frozen by" in status.stdout and "2 scheduled run(s) skipped" in status.stdout
    shutil.copy(REPO / "mkdocs.yml", project.root / "mkdocs.yml")
    (project.root / "docs").mkdir()
    generate(project.root, project.archive)
    dashboard = (project.root / "docs" / "status" / "index.md").read_text()
    assert '!!! failure "Frozen: all environments"' in dashboard and "change freeze" in dashboard

    assert "nothing to thaw" in cli(project, "thaw", "--env", "local").stdout
    thawed = cli(project, "thaw", "--all")
    assert thawed.code == 0 and "thawed: all environments" in thawed.stdout
    assert freeze.active(project.archive) == [] and "FROZEN" not in cli(project, "status").stdout
    ran = cli(project, "run", "--due")  # the firing that was skipped is caught up after the thaw
    assert ran.code == 0 and len(project.run_dirs()) == 1, ran.output


def test_freeze_input_is_checked_and_an_unreadable_freeze_still_freezes(project: Project) -> None:
    assert cli(project, "freeze", "--reason", "x").code == 2  # neither --env nor --all
    assert cli(project, "freeze", "--env", "local", "--all", "--reason", "x").code == 2
    unknown = cli(project, "freeze", "--env", "nosuch", "--reason", "x")
    assert unknown.code == 2 and "nosuch" in unknown.stderr
    assert cli(project, "freeze", "--env", "../x", "--reason", "x").code == 2
    blank = cli(project, "freeze", "--env", "local", "--reason", "   ")
    assert blank.code == 2 and "a freeze needs a reason" in blank.stderr
    assert not (project.archive / "freeze").exists()  # nothing half-written
    (project.archive / "freeze").mkdir(parents=True)
    (project.archive / "freeze" / "local.json").write_text("{not json")
    found = freeze.frozen("local", project.archive)
    assert found is not None and "cannot be read" in found.reason


def test_freeze_is_the_function_incident_mode_calls(project: Project) -> None:
    made = freeze.freeze("local", "incident INC-7 opened", "alice@host", project.archive)
    assert freeze.frozen("local", project.archive) == made and made.by == "alice@host"
    assert freeze.frozen("staging", project.archive) is None  # only that environment
    assert [f.scope for f in freeze.thaw("local", project.archive)] == ["local"]
    assert freeze.frozen("local", project.archive) is None
