"""The catalog verbs: list, envs, lint, status (with filters), new, --help."""
from __future__ import annotations

import json

import pytest
from conftest import Project, cli


def test_help_explains_the_verbs(project: Project) -> None:
    result = cli(project, "--help")
    assert result.code == 0
    for verb in ("run", "verify", "status", "lint", "list", "envs", "new"):
        assert verb in result.stdout
    run_help = cli(project, "run", "--help").stdout
    assert "--approve" in run_help and "--dry-run" in run_help and "Exit status" in run_help


def test_list_and_envs(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    runbook = project.add_notebook("gated.ipynb", folder="runbooks")
    nb = json.loads(runbook.read_text())
    nb["metadata"]["drillbook"]["kind"] = "runbook"
    runbook.write_text(json.dumps(nb))
    listed = cli(project, "list")
    assert listed.code == 0
    assert "passes" in listed.stdout and "gated" in listed.stdout and "SOC 2 CC7.5" in listed.stdout
    assert "gated" not in cli(project, "list", "--kind", "drill").stdout
    envs = cli(project, "envs")
    assert envs.code == 0 and "rto_seconds=30" in envs.stdout


def test_lint_clean_project(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    result = cli(project, "lint")
    assert result.code == 0, result.output
    assert "clean" in result.stdout


def test_lint_reports_each_problem(project: Project) -> None:
    project.add_notebook("no_parameters.ipynb")
    dirty = project.add_notebook("passes.ipynb", name="dirty.ipynb")
    nb = json.loads(dirty.read_text())
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hi"}]
    nb["cells"][2]["execution_count"] = 1
    del nb["metadata"]["kernelspec"]
    nb["metadata"]["drillbook"]["owner"] = ""
    dirty.write_text(json.dumps(nb))
    project.add_notebook("passes.ipynb", folder="runbooks", name="plain_meta.ipynb")
    project.write_env("local", "parameters:\n  plain_meta:\n    colour: blue\n  ghost:\n    x: 1\n")
    result = cli(project, "lint")
    assert result.code == 1
    out = result.stdout
    assert "notebooks/drills/no_parameters.ipynb: no parameters cell" in out
    assert "notebooks/drills/dirty.ipynb: no kernelspec" in out
    assert "notebooks/drills/dirty.ipynb: committed outputs in cell(s) 2" in out
    assert "notebooks/drills/dirty.ipynb: metadata.drillbook.owner: String should have at least 1 character" in out
    assert "parameters.plain_meta.colour: the notebook declares no parameter 'colour'" in out
    assert "parameters.ghost: no runbook or drill named 'ghost'" in out
    assert "runbooks/plain_meta.ipynb: metadata.drillbook.kind is 'drill' but the notebook lives in runbooks/" in out
    assert "7 problem(s)" in out


@pytest.mark.integration
def test_status_shows_latest_per_drill_and_environment_with_filters(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    project.add_notebook("check_fails.ipynb")
    project.write_env("other", "hosts:\n  here:\n    shell: local\n")
    assert cli(project, "status").stdout.strip() == "no runs recorded yet"
    for name, env in (("passes", "local"), ("check_fails", "local"), ("passes", "other"), ("check_fails", "local")):
        cli(project, "run", name, "--env", env)
    table = cli(project, "status").stdout
    rows = [line for line in table.splitlines() if "│ passes" in line or "│ check_fails" in line]
    assert len(rows) == 3  # latest per drill × environment
    failed_only = cli(project, "status", "--status", "failed").stdout
    assert "check_fails" in failed_only and "│ passes" not in failed_only
    assert "│ passes" in cli(project, "status", "--env", "other").stdout
    assert "no runs recorded yet matching the filters" in cli(project, "status", "--drill", "nosuch").stdout


def test_new_copies_a_template(project: Project) -> None:
    result = cli(project, "new", "disk-check", "--kind", "drill", "--title", "Disk check", "--owner", "ops")
    assert result.code == 0, result.output
    path = project.root / "notebooks" / "drills" / "disk-check.ipynb"
    nb = json.loads(path.read_text())
    assert nb["metadata"]["drillbook"]["title"] == "Disk check"
    assert cli(project, "lint").code == 0
    again = cli(project, "new", "disk-check", "--kind", "drill", "--title", "Disk check", "--owner", "ops")
    assert again.code == 2 and "already exists" in again.stderr


@pytest.mark.integration
def test_run_due_runs_what_the_schedule_says_once(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    project.add_notebook("check_fails.ipynb")
    (project.root / "parameters" / "schedule.yaml").write_text(
        "runs:\n"
        "  - {drill: passes, env: local, cron: '@yearly'}\n"
        "  - {drill: check_fails, env: local, cron: '0 0 1 1 *'}\n"
    )
    first = cli(project, "run", "--due")
    assert first.code == 1  # check_fails failed, as it should; both ran
    assert sorted(json.loads(l)["drill"] for l in (project.archive / "ledger.jsonl").read_text().splitlines()) == [
        "check_fails", "passes"]
    second = cli(project, "run", "--due")
    assert second.code == 0 and len(project.run_dirs()) == 2  # nothing was due any more


def test_bad_schedule_is_a_clear_error(project: Project) -> None:
    (project.root / "parameters" / "schedule.yaml").write_text("runs:\n  - {drill: x, env: local, cron: '0 25 * * *'}\n")
    result = cli(project, "run", "--due")
    assert result.code == 2
    assert "runs[0]: bad cron expression '0 25 * * *': hour '25' is outside 0-23" in result.stderr
