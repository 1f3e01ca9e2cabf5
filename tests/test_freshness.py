"""Runbook freshness: the last passing drill that exercised a runbook, and "changed since last drill",
in `drillbook status --stale` (real CLI) and on the generated runbook page and compliance matrix.

The drills are written through the drill API and the archive (bench/site_build.py's writer): the
executed runbook a drill leaves in attachments/ is the runbook's cells plus papermill's injected
parameters cell, as a real child run archives it.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from conftest import cli
from drillbook.site import build as site
from sitesupport import site_build

pytestmark = pytest.mark.integration


def executed_copy(source: Path) -> str:
    """The runbook as a child run archives it: papermill adds an injected-parameters cell and outputs."""
    nb = nbformat.read(str(source), as_version=4)
    injected = nbformat.v4.new_code_cell('env = "local"\ndry_run = False\n')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(2, injected)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    return nbformat.writes(nb)


@pytest.fixture
def drilled(tmp_path: Path) -> tuple[Path, str]:
    root = site_build.make_project(tmp_path / "project")
    archive = root / "reports" / "evidence"
    writer = site_build.new_writer(root, archive)
    runbook = root / "runbooks" / "promote.ipynb"
    now = datetime.now(timezone.utc)
    passed = writer.run("failover_sim", "local", now - timedelta(hours=2), rto=12.5,
                        attachments={"promote.ipynb": executed_copy(runbook)})
    writer.run("failover_sim", "local", now - timedelta(hours=1), rto=99.0, ok=False,  # a failing drill: not evidence
               attachments={"promote.ipynb": executed_copy(runbook)})
    return root, passed


def test_an_unchanged_runbook_is_fresh(drilled: tuple[Path, str]) -> None:
    root, _ = drilled
    result = cli(root, "status", "--stale")
    assert result.code == 0, result.output
    assert "every runbook (1) is unchanged since its last passing drill" in result.stdout


def test_a_runbook_edited_after_its_last_drill_is_stale_in_status_and_on_the_site(drilled: tuple[Path, str]) -> None:
    root, passed = drilled
    runbook = root / "runbooks" / "promote.ipynb"
    nb = json.loads(runbook.read_text())
    first = "".join(nb["cells"][0]["source"])
    nb["cells"][0]["source"] = first[:-1] + ("x" if first[-1] != "x" else "y")  # one character
    runbook.write_text(json.dumps(nb, indent=1))
    result = cli(root, "status", "--stale")
    assert result.code == 1, result.output
    assert "Stale runbooks (1 of 1)" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "promote" in line)
    assert "changed since last drill" in row and "failover_sim" in row and passed in row and "12.5 s" in row
    site.generate(root, root / "reports" / "evidence")
    page = (root / "docs" / "runbooks" / "promote.md").read_text()
    assert "## Last drill" in page and "changed since last drill" in page and "12.5 s" in page
    matrix = (root / "docs" / "status" / "compliance.md").read_text()
    row = next(line for line in matrix.splitlines() if "promote" in line and "Promote the standby" in line)
    assert "changed since last drill" in row and "RTO 12.5 s" in row


def test_a_runbook_no_passing_drill_exercised_is_stale(tmp_path: Path) -> None:
    root = site_build.make_project(tmp_path / "project")
    writer = site_build.new_writer(root, root / "reports" / "evidence")
    writer.run("failover_sim", "local", datetime.now(timezone.utc), rto=3.0)  # ran no runbook
    result = cli(root, "status", "--stale")
    assert result.code == 1 and "never exercised by a passing drill" in result.stdout
    site.generate(root, root / "reports" / "evidence")
    assert "never drilled" in (root / "docs" / "runbooks" / "promote.md").read_text()
