"""Four eyes in a person's run: a real kernel, driven cell by cell, LIVE on a production environment.

The approver approves a dry run of the notebook made with the real CLI (``drillbook run --dry-run``,
``drillbook approve``); the operator, bob, runs the same notebook in a real ipykernel. His gate opens
only when the approval pasted in the gate's panel (the real widgets, pressed in the kernel) is valid;
each refusal leaves it closed with its one line; the record and the evidence page carry the approval,
and it is used once: by the panel of the next run, and by ``drillbook run --approval``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from approvalsupport import approve, dry_run, production
from conftest import Project, cli
from drillbook.evidence import ledger
from drillbook.site.evidence import _cleanups_and_gates
from test_interactive import Kernel

pytestmark = pytest.mark.integration
STEP = 'drill.step("Promote", lambda: Path(marker_path).write_text("promoted"), mutating=True, gate="promote")'


def _parameters(marker: Path) -> str:
    """The parameters cell as bob edits it to go live (approve=["promote"] is not enough on production)."""
    return (f'env = "prod"\ndry_run = False\napprove = ["promote"]\nrun_id = None\nchange = "CHG-7"\n'
            f"marker_path = {str(marker)!r}")


def _paste(k: Kernel, gate: str, approval_id: str) -> str:
    """Paste ``approval_id`` in the gate's row and press Approve; what the row says then."""
    cell = k.run(f"row = drillbook.ui.gate_row(drill, {gate!r}, {gate!r})\nrow.children[0].value = {approval_id!r}\n"
                 "row.children[1].click()\nprint(row.children[2].value)")
    assert cell.error is None, cell.text
    return cell.text.strip()


def test_a_persons_live_production_gate_opens_only_with_a_valid_unused_approval(
        project: Project, tmp_path: Path) -> None:
    keys = production(project, tmp_path)
    marker = tmp_path / "promoted"
    dry = dry_run(project, "-p", f"marker_path={marker}")
    alice, bob = (approve(project, dry, keys[name]) for name in ("alice", "bob"))
    k = Kernel(project.root, {"DRILLBOOK_OPERATOR": "bob", "JPY_SESSION_NAME": "notebooks/drills/gated.ipynb",
                              "DRILLBOOK_HOME": os.environ["DRILLBOOK_HOME"]}, tmp_path)
    try:
        k.run(_parameters(marker))
        opened = k.run("import drillbook, drillbook.ui\nfrom pathlib import Path\n"
                       "drill = drillbook.start(env=env, dry_run=dry_run, approve=approve, run_id=run_id, change=change)")
        assert opened.error is None and "LIVE" in opened.text, opened.text
        stopped = k.run(STEP)
        assert stopped.error is not None and stopped.error["ename"] == "AwaitingApproval", stopped.text
        assert "paste the id of an approval of gate promote" in stopped.text and "drillbook approve" in stopped.text
        assert "description='gate promote approval id'" in stopped.text  # the row in the step's output asks for one
        said = k.run("print(drillbook.ui.gate_row(drill, 'promote', 'promote').children[2].value)").text.strip()
        assert said == "this environment needs an approval: paste the id from `drillbook approve`"
        assert not marker.exists()

        assert _paste(k, "promote", bob) == f"✗ approval {bob} was given by bob, the operator of this run: " \
                                             "four eyes need another approver"
        assert _paste(k, "rollback", alice) == f"✗ approval {alice} opens gate 'promote', not 'rollback'"
        k.run(f"marker_path = {str(marker) + 's'!r}")  # one character more in one parameter
        assert _paste(k, "promote", alice) == \
            f"✗ approval {alice} no longer matches: the parameters differ since dry run {dry}"
        k.run(_parameters(marker))
        assert _paste(k, "promote", "apv-nope").startswith("✗ not an approval id")
        again = k.run(STEP)
        assert again.error is not None and again.error["ename"] == "AwaitingApproval" and not marker.exists()

        opened_text = f"✓ opened by approval {alice} of alice — Shift+Enter goes on"
        assert _paste(k, "promote", alice) == opened_text
        k.run(f"marker_path = {str(marker) + 's'!r}")  # set again after the approval was pasted
        closed = k.run(STEP)
        assert closed.error is not None and closed.error["ename"] == "AwaitingApproval", closed.text
        assert f"approval {alice} no longer matches: the plan changed since it was pasted" in closed.text
        assert not marker.exists() and not Path(f"{marker}s").exists()
        k.run(_parameters(marker))
        assert _paste(k, "promote", alice) == opened_text
        went = k.run(STEP)
        assert went.error is None and "✓ Promote" in went.text, went.text
        assert marker.read_text() == "promoted"
        run_id = k.run("print(drill.run_id)").text.strip()
        k.run("drill.finish()")
        rec = json.loads((project.archive / "runs" / run_id / "record.json").read_text())
        assert rec["mode"] == "interactive" and rec["status"] == "passed" and rec["dry_run"] is False
        [approval] = rec["approvals"]
        assert (approval["id"], approval["approver"], approval["dry_run"]) == (alice, "alice", dry)
        assert approval["key_fingerprint"].startswith("SHA256:") and approval["plan_sha256"] == rec["plan"]["sha256"]
        dry_rec = json.loads((project.archive / "runs" / dry / "record.json").read_text())
        assert rec["plan"] == dry_rec["plan"]  # the person's run hashed what the CLI's dry run hashed
        [step_gate] = [g for g in rec["gates"] if g["step"] == "Promote"]
        assert step_gate["method"] == "approval" and alice in step_gate["how"]
        page = _cleanups_and_gates(rec)
        assert alice in page and "by **alice**" in page and rec["plan"]["sha256"][:16] in page
        assert ledger.read_entries(project.archive)[-1]["approvals"] == [alice]

        marker.unlink()
        k.run("drill = drillbook.start(env=env, dry_run=dry_run, approve=approve, run_id=run_id, change=change)")
        assert _paste(k, "promote", alice) == f"✗ approval {alice} was already used by run {run_id}"
        k.run("drill.finish()")
    finally:
        k.stop(now=True)
    reused = cli(project, "run", "gated", "--env", "prod", "--change", "CHG-7", "--approval", alice,
                 "-p", f"marker_path={marker}", env={"DRILLBOOK_OPERATOR": "bob"})
    assert reused.code == 2 and f"approval {alice} was already used by run {run_id}" in reused.stderr, reused.output
    assert not marker.exists()
    assert cli(project, "verify").code == 0
