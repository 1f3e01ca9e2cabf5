"""runner.child: a runbook a drill runs as a child goes through the runner's own pieces (integration)."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from conftest import FIXTURES, Project, cli

pytestmark = pytest.mark.integration


def _catalogue(project: Project, fixture: str, name: str, **meta: object) -> nbformat.NotebookNode:
    nb = nbformat.read(str(FIXTURES / "notebooks" / fixture), as_version=4)
    nb.metadata["drillbook"].update(meta)
    (project.root / "notebooks" / "drills" / f"{name}.ipynb").write_text(nbformat.writes(nb))
    return nb


def test_a_child_that_outlasts_its_timeout_is_interrupted_and_its_cleanups_run(project: Project,
                                                                               tmp_path: Path) -> None:
    marker = tmp_path / "child-cleaned"
    # The deadline counts from the child's kernel launch: leave its boot (slow on a loaded machine)
    # ample time to reach the sleep, whose cleanup the interrupt must then run.
    _catalogue(project, "sleeps.ipynb", "sleepy-child", title="Sleepy child", timeout_seconds=6)
    parent = _catalogue(project, "passes.ipynb", "parent", title="Runs a sleepy child")
    parent.cells[3:] = [nbformat.v4.new_code_cell(
        f'child = drill.run_notebook("sleepy-child", {{"marker_path": {str(marker)!r}, "seconds": 45.0}})\n'
        'drill.check("child ran", child["status"] in ("passed", "error"), str(child["reason"]))'
    ), nbformat.v4.new_code_cell("drill.finish()")]
    (project.root / "notebooks" / "drills" / "parent.ipynb").write_text(nbformat.writes(parent))
    result = cli(project, "run", "parent", "--env", "local")
    assert result.code == 0, result.output
    bundle = project.run_dirs()[0]
    child = json.loads((bundle / "attachments" / "sleepy-child.journal.json").read_text())
    assert child["status"] == "error"
    assert child["reason"] == "execution timeout: the notebook ran longer than 6 s"
    assert marker.read_text() == "cleaned"  # interrupted, not killed: the child's cleanup ran
    assert (bundle / "attachments" / "sleepy-child.ipynb").is_file()


def test_a_parent_interrupted_while_its_child_runs_lets_the_childs_cleanups_run(project: Project,
                                                                                tmp_path: Path) -> None:
    marker = tmp_path / "child-cleaned"
    _catalogue(project, "sleeps.ipynb", "sleepy-child", title="Sleepy child")
    parent = _catalogue(project, "passes.ipynb", "parent", title="Runs a sleepy child")
    parent.cells[3:] = [nbformat.v4.new_code_cell(
        f'drill.run_notebook("sleepy-child", {{"marker_path": {str(marker)!r}, "seconds": 45.0}})'
    ), nbformat.v4.new_code_cell("drill.finish()")]
    (project.root / "notebooks" / "drills" / "parent.ipynb").write_text(nbformat.writes(parent))
    # Two kernels boot before the child sleeps: a deadline with room for both on a loaded machine.
    result = cli(project, "run", "parent", "--env", "local", "--timeout", "8")
    assert result.code == 1, result.output
    record = json.loads((project.run_dirs()[0] / "record.json").read_text())
    assert (record["status"], record["reason"]) == ("error", "execution timeout: the notebook ran longer than 8 s")
    assert marker.read_text() == "cleaned"  # the child's kernel was interrupted, not left to be killed
