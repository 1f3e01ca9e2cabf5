"""Four eyes in a person's run (unit): which runs are held, what opens their gates, what the plan hash binds,
and that an approval is used once (the ledger and the record rules behind it)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from drillbook import gates
from drillbook.config.environments import Environment
from drillbook.config.notebooks import declared_parameters
from drillbook.errors import GateNotApproved
from drillbook.evidence import approvals, record
from drillbook.evidence.archive import _ledger_fields
from drillbook.evidence.record import ApprovalInfo
from drillbook.runner import personplan
from drillbook.runner.plan import with_defaults

INFO: ApprovalInfo = {"id": "apv-0123456789abcdef", "gate": "promote", "dry_run": "DRY", "approver": "alice",
                      "key_fingerprint": "SHA256:x", "plan_sha256": "p" * 64, "approved_at": "a", "expires_at": "b"}


@dataclass(eq=False)  # hashable by identity: the gates module keeps per-run state in weak dictionaries
class Run:
    env: Environment
    dry_run: bool = False
    unattended: bool = False
    change: str | None = "CHG-1"
    approved: set[str] = field(default_factory=set)
    data: dict[str, Any] = field(default_factory=lambda: {"operator": "bob@h", "started_at": "t0", "steps": [],
                                                          "gates": []})


def prod(production: bool = True) -> Environment:
    return Environment(name="prod", production=production)


@pytest.fixture(autouse=True)
def no_panel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gates, "_in_place", [])
    monkeypatch.setattr(gates, "_recheck", [])


def test_only_a_persons_live_run_on_an_environment_requiring_approval_is_held() -> None:
    assert gates.needs_approval(Run(prod()))
    assert not gates.needs_approval(Run(prod(), dry_run=True))  # a dry run is never held to approvals
    assert not gates.needs_approval(Run(prod(), unattended=True))  # drillbook run checked --approval already
    assert not gates.needs_approval(Run(prod(False)))


def test_a_held_gate_opens_with_an_approval_not_with_the_approve_parameter_or_a_prompt() -> None:
    run = Run(prod(), approved={"promote"})  # approve=["promote"] in the parameters cell
    with pytest.raises(GateNotApproved, match="needs an approval: environment 'prod' requires four eyes"):
        gates.pass_gate(run, "promote", "Promote")
    assert run.data["gates"] == []
    gates.open_by_approval(run, INFO)
    gates.pass_gate(run, "promote", "Promote")
    opened, passed = run.data["gates"]
    assert opened["method"] == passed["method"] == "approval" and passed["step"] == "Promote"
    assert INFO["id"] in passed["how"] and "alice" in passed["how"] and run.data["approvals"] == [INFO]
    gates.pass_gate(Run(prod(False), approved={"promote"}), "promote", "Promote")  # elsewhere: as before


def test_an_approval_that_no_longer_matches_closes_the_gate_again_in_the_panel(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(gates, "_in_place", [lambda run, gate, title, word: shown.append((gate, title))])
    monkeypatch.setattr(gates, "_recheck", [lambda run, approval: "the plan changed since it was pasted"])
    run = Run(prod())
    gates.open_by_approval(run, INFO)
    run.data["steps"].append({"title": "Promote"})  # what the step opened before its gate
    with pytest.raises(gates.AwaitingApproval) as stopped:
        gates.pass_gate(run, "promote", "Promote")
    assert "(the plan changed since it was pasted)" in stopped.value.message
    assert "paste the id of an approval of gate promote" in stopped.value.hint
    assert shown == [("promote", "Promote")] and gates.opened_by(run, "promote") is None


def _ledger(folder: Path, *entries: dict[str, Any]) -> Path:
    (folder / "ledger.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return folder


def test_an_approval_is_used_once_the_ledger_holds_a_real_run_that_carried_it(tmp_path: Path) -> None:
    aid = INFO["id"]
    approval = {"type": "approval", "approval": {"id": aid}}
    archive = _ledger(tmp_path, approval, {"run_id": "DRY2", "dry_run": True, "approvals": [aid]})
    assert approvals.lookup(archive, aid) == (approval, None)  # a dry run that named it does not use it
    assert approvals.unused(archive, aid) == approval
    _ledger(tmp_path, approval, {"run_id": "R1", "dry_run": False, "approvals": [aid]}, {"run_id": "R2"})
    assert approvals.lookup(archive, aid) == (approval, "R1")
    with pytest.raises(approvals.ApprovalRefused, match=f"approval {aid} was already used by run R1"):
        approvals.unused(archive, aid)


def test_the_ledger_entry_names_the_approvals_whose_gate_a_step_passed() -> None:
    base = {"run_id": "R1", "drill": "d", "env": "prod", "status": "passed", "dry_run": False}
    passed = [{"gate": INFO["gate"], "step": "Promote", "method": "approval"}]
    assert _ledger_fields({**base, "approvals": [INFO], "gates": passed}, "m")["approvals"] == [INFO["id"]]  # type: ignore[typeddict-item]
    # Stopped before the gated step (no change reference): the approval is not used up.
    assert "approvals" not in _ledger_fields({**base, "approvals": [INFO], "gates": []}, "m")  # type: ignore[typeddict-item]
    assert "approvals" not in _ledger_fields(base, "m")  # type: ignore[arg-type]  # older entries stay as they were


def test_only_a_persons_run_takes_approvals_from_the_kernels_journal() -> None:
    journal: Any = {"approvals": [INFO], "gates": []}
    kwargs: Any = {"status": "passed", "reason": None, "seconds": 1.0, "kernel_journal": journal,
                   "failing_cell": None, "results": None}
    assert record.complete_record({"mode": "interactive"}, **kwargs)["approvals"] == [INFO]  # type: ignore[typeddict-item]
    # Under drillbook run the runner checked them: a notebook writing its journal adds or removes none.
    assert "approvals" not in record.complete_record({"mode": "run"}, **kwargs)  # type: ignore[typeddict-item]
    assert record.complete_record({"mode": "run", "approvals": []}, **kwargs)["approvals"] == []  # type: ignore[typeddict-item]


def _runbook(folder: Path, marker: str = "") -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(f'env = "local"\ndry_run = True\napprove = []\nmarker_path = "{marker}"\n'
                                       "replicas = 2")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import drillbook")]
    path = folder / "tiny.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_a_persons_plan_hashes_what_the_cli_dry_run_of_the_runbook_hashed(tmp_path: Path) -> None:
    runbook = _runbook(tmp_path)
    env_file = tmp_path / "prod.yaml"
    env_file.write_text("production: true\n")
    env = Environment(name="prod", production=True, source=str(env_file))
    declared = declared_parameters(nbformat.read(str(runbook), as_version=4))
    cli_plan = approvals.plan_hash(runbook, with_defaults(declared, {"env": "prod", "dry_run": True}), env_file)
    opened = personplan.PlanSource(runbook, tmp_path, "tiny")  # the runbook itself, opened in JupyterLab
    assert personplan.plan_hash(opened, env) == cli_plan
    # A working copy: other bytes (its env, its outputs), the runbook's sha256 in incident.json
    copy_folder = tmp_path / "INC-1"
    copy_folder.mkdir()
    copy = _runbook(copy_folder, marker="x")
    sha = hashlib.sha256(runbook.read_bytes()).hexdigest()
    (copy_folder / "incident.json").write_text(json.dumps({"runbook": "tiny", "env": "prod", "source_sha256": sha}))
    working = personplan.PlanSource(copy, copy_folder, "tiny")
    plan = personplan.plan_hash(working, env)
    assert plan is not None and plan["notebook_sha256"] == cli_plan["notebook_sha256"]
    assert plan["parameters_sha256"] != cli_plan["parameters_sha256"]  # its marker_path differs: bound
    (copy_folder / "incident.json").write_text(json.dumps({"runbook": "tiny", "env": "prod", "source_sha256": "zz"}))
    assert personplan.plan_hash(working, env) is None  # not a sha256: nothing an approval could match
    assert personplan.plan_hash(personplan.PlanSource(None, tmp_path, "x"), env) is None


def test_the_panel_refuses_what_is_not_an_approval_id(tmp_path: Path) -> None:
    run: Any = Run(prod())
    with pytest.raises(approvals.ApprovalRefused, match="not an approval id"):
        personplan.approve_with(run, personplan.PlanSource(None, tmp_path, "x"), "apv-<script>", "promote")
    assert gates.opened_by(run, "promote") is None
