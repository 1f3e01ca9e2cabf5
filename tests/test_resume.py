"""Resuming a failed run: the real ``drillbook`` command, papermill and a real kernel, in a temporary project.

The runbook has five steps; step 3 checks a file that the test removes (the broken precondition),
so the first run fails there; the test puts the file back and resumes. Each step appends its title
to a tally file, so what really ran is known from outside the evidence too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from conftest import Project, cli
from test_interactive import Kernel

RUNBOOK = '''import drillbook
from pathlib import Path
drill = drillbook.start(env=env, dry_run=dry_run, approve=approve, run_id=run_id, resume=resume)
tally = Path(workdir) / "tally.txt"
def did(title, value):
    with open(tally, "a") as f:
        f.write(title + "\\n")
    return value
drill.require("steady state", (Path(workdir) / "steady").exists(), "the system answers")
fenced = drill.step("Fence the old primary", lambda: did("fence", {"fenced": "pg1", "lsn": 42}),
                    mutating=True, resume="skip")
promoted = drill.step("Promote the standby", lambda: did("promote", "pg2"), mutating=True, resume="skip")
def repoint():
    if not (Path(workdir) / "dns-ready").exists():
        raise RuntimeError("DNS is not ready")
    return did("repoint", f"app -> {promoted}")
drill.step("Repoint the application", repoint, mutating=True, resume="skip")
drill.step("Check replication", lambda: did("check", fenced["lsn"] + 1))
drill.step("Record the new primary", lambda: did("record", promoted), mutating=True)
drill.finish()
'''


def _runbook(project: Project, code: str = RUNBOOK) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["drillbook"] = {"kind": "runbook", "title": "Five steps", "owner": "tests"}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('env = "local"\ndry_run = True\napprove = []\nrun_id = None\n'
                                       'change = None\nresume = None\nworkdir = "."')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    path = project.root / "runbooks" / "five.ipynb"
    nbformat.write(nb, str(path))
    return path


def _record(project: Project, run_id: str) -> dict:
    return json.loads((project.archive / "runs" / run_id / "record.json").read_text())


def _run_ids(project: Project) -> list[str]:
    return [p.name for p in project.run_dirs()]


def _edit(path: Path, old: str, new: str) -> None:
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace(old, new)
    nbformat.write(nb, str(path))


def test_a_run_failed_at_step_3_of_5_resumed_skips_steps_1_2_with_their_values_and_both_verify(
        project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "steady").touch()
    path = _runbook(project)
    project.write_env("staging", "description: staging\nhosts:\n  here:\n    shell: local\n")
    first = cli(project, "run", "five", "--env", "local", "-p", f"workdir={work}", "--incident", "INC-7")
    assert first.code == 1, first.output  # step 3's precondition (dns-ready) is missing
    [first_id] = _run_ids(project)
    assert _record(project, first_id)["status"] == "error"
    assert (work / "tally.txt").read_text().split() == ["fence", "promote"]
    assert _record(project, first_id)["steps"][0]["value"] == {"fenced": "pg1", "lsn": 42}  # journalled
    ledger = (project.archive / "ledger.jsonl").read_bytes()

    # Refusals: one line, exit 2, nothing written.
    _edit(path, "DNS is not ready", "DNS still not ready")
    cases = {
        ("--resume", "20260101T000000Z-nope-local-000000"): "is unknown",
        ("--resume", "../../etc"): "is not a run id",
        ("--resume", first_id, "--env", "staging"): "ran on environment 'local', not 'staging'",
        ("--resume", first_id): "changed since run",
        ("passes", "--resume", first_id): f"ran five, not passes",
    }
    for args, says in cases.items():
        refused = cli(project, "run", *args)
        assert refused.code == 2 and says in refused.output, (args, refused.output)
        assert len(refused.output.strip().splitlines()) <= 2, refused.output  # the line and its hint
    assert (project.archive / "ledger.jsonl").read_bytes() == ledger

    (work / "dns-ready").touch()  # the precondition repaired
    (work / "tally.txt").unlink()
    again = cli(project, "run", "--resume", first_id, "--allow-changed")
    assert again.code == 0, again.output
    assert f"resuming run {first_id}" in again.output
    # Steps 1–2 did not run again; 3–5 ran, with the values steps 1–2 journalled in the first run.
    assert (work / "tally.txt").read_text().split() == ["repoint", "check", "record"]
    [second_id] = [r for r in _run_ids(project) if r != first_id]
    rec = _record(project, second_id)
    assert rec["status"] == "passed" and rec["resumes"] == first_id and rec["resume_source_changed"] is True
    assert rec["incident"] == "INC-7" and rec["parameters"]["workdir"] == str(work)  # carried over
    steps = {s["title"]: s for s in rec["steps"]}
    assert [s["status"] for s in rec["steps"]] == ["skipped", "skipped", "passed", "passed", "passed"]
    assert steps["Fence the old primary"]["value"] == {"fenced": "pg1", "lsn": 42}
    assert steps["Fence the old primary"]["resumed_from"] == first_id
    assert steps["Repoint the application"]["value"] == "app -> pg2"  # built from step 2's handed-on value
    assert steps["Check replication"]["value"] == 43  # built from step 1's handed-on value
    assert [c["name"] for c in rec["checks"]] == ["steady state"]  # the steady state was checked again
    verified = cli(project, "verify")
    assert verified.code == 0, verified.output

    twice = cli(project, "run", "--resume", first_id, "--allow-changed")
    assert twice.code == 2 and f"already resumed by run {second_id}" in twice.output, twice.output
    passed = cli(project, "run", "--resume", second_id)
    assert passed.code == 2 and "passed: there is nothing to resume" in passed.output, passed.output
    assert len(_run_ids(project)) == 2


def test_saved_outputs_are_not_a_change_of_source(project: Project, tmp_path: Path) -> None:
    from drillbook.evidence.record import code_sha256

    path = _runbook(project)
    before = code_sha256(path)
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="✓ done")]
    nb.cells[1].execution_count = 3
    nbformat.write(nb, str(path))
    assert code_sha256(path) == before
    nb.cells[0].source += "\nresume = 'a-run'"  # the parameters cell: what an operator sets
    nbformat.write(nb, str(path))
    assert code_sha256(path) == before
    nb.cells[1].source += "\n# edited"
    nbformat.write(nb, str(path))
    assert code_sha256(path) != before


# --------------------------------------------------------------------------- drillbook.start(resume=…) in a kernel
def _kernel(project: Project, sockets: Path) -> Kernel:
    env = {"DRILLBOOK_OPERATOR": "alice", "JPY_SESSION_NAME": "runbooks/five.ipynb",
           "DRILLBOOK_HOME": os.environ["DRILLBOOK_HOME"]}
    return Kernel(project.root, env, sockets)


def test_a_person_resumes_a_failed_interactive_run_in_a_fresh_kernel(
        project: Project, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "steady").touch()
    _runbook(project)
    params = f'env = "local"\ndry_run = False\napprove = []\nrun_id = None\nresume = None\nworkdir = {str(work)!r}'
    first = _kernel(project, tmp_path_factory.mktemp("k1"))
    try:
        first.run(params)
        failed = first.run(RUNBOOK)
        assert failed.error is not None and "DNS is not ready" in failed.text, failed.text
        first_id = first.run("print(drill.run_id)").text.strip()
    finally:
        first.stop(now=True)
    assert _record(project, first_id)["mode"] == "interactive"
    (work / "dns-ready").touch()
    (work / "tally.txt").unlink()
    second = _kernel(project, tmp_path_factory.mktemp("k2"))  # kernel state is gone, as after a restart
    try:
        second.run(params.replace("resume = None", f"resume = {first_id!r}"))
        resumed = second.run(RUNBOOK)
        assert resumed.error is None, resumed.text
        assert "Fence the old primary — completed in run" in resumed.text
        second_id = second.run("print(drill.run_id)").text.strip()
    finally:
        second.stop(now=True)
    assert (work / "tally.txt").read_text().split() == ["repoint", "check", "record"]
    rec = _record(project, second_id)
    assert rec["mode"] == "interactive" and rec["status"] == "passed" and rec["resumes"] == first_id
    assert [s["status"] for s in rec["steps"]] == ["skipped", "skipped", "passed", "passed", "passed"]
    assert rec["steps"][3]["value"] == 43 and rec["steps"][2]["value"] == "app -> pg2"
    assert cli(project, "verify").code == 0
    # start(resume=…) again: refused with one line (already resumed), nothing opened.
    again = _kernel(project, tmp_path_factory.mktemp("k3"))
    try:
        refused = again.run(f"import drillbook\ndrillbook.start(dry_run=False, resume={first_id!r})")
        assert refused.error is not None and f"already resumed by run {second_id}" in refused.text, refused.text
        assert "Traceback" not in refused.text
    finally:
        again.stop(now=True)
    assert len(_run_ids(project)) == 2


def test_journalled_values_and_what_cannot_be_kept(tmp_path: Path) -> None:
    from drillbook import resuming

    step: dict = {}
    resuming.keep(step, {"lsn": 42, "hosts": ["pg1"]})  # type: ignore[arg-type]
    assert step == {"value": {"lsn": 42, "hosts": ["pg1"]}}
    for unkept in (object(), float("nan"), "x" * (resuming.MAX_VALUE_CHARS + 1)):
        step = {}
        resuming.keep(step, unkept)  # type: ignore[arg-type]
        assert step == {"value_kept": resuming.UNKEPT}
    with pytest.raises(Exception, match="resume must be 'skip' or 'run'"):
        resuming.carried(None, "Fence", True, None, "maybe")  # type: ignore[arg-type]


def test_only_completed_steps_declared_skip_are_skipped_each_in_its_place(tmp_path: Path) -> None:
    from drillbook import resuming

    done = {"mutating": True, "gate": None, "started_at": "t", "status": "passed"}
    resuming.write_handover(tmp_path, "run-1", [  # type: ignore[list-item]
        {**done, "title": "Fence", "value": "pg1"}, {**done, "title": "Unkept", "value_kept": resuming.UNKEPT},
        {**done, "title": "Note", "status": "not-applicable"}, {**done, "title": "Fence", "status": "failed"},
        {**done, "title": "Read", "value": 1}])

    class Run:
        run_dir, carried, said = tmp_path, resuming.Carried(), []
        data: dict = {"steps": []}

        def _save(self) -> None: ...

        def _say(self, text: str) -> None:
            self.said.append(text)

    run = Run()
    assert resuming.carried(run, "Fence", True, None, "skip") == "pg1"  # type: ignore[arg-type]
    assert resuming.carried(run, "Unkept", True, None, "skip") is resuming.RUN  # its value was not journalled
    assert resuming.carried(run, "Note", False, None, "skip") is resuming.RUN  # never a step of its own
    assert resuming.carried(run, "Fence", True, None, "skip") is resuming.RUN  # the second Fence had failed
    assert resuming.carried(run, "Read", False, None, "run") is resuming.RUN  # not declared safe to skip
    assert [s["status"] for s in run.data["steps"]] == ["skipped"]
    assert run.data["steps"][0]["resumed_from"] == "run-1" and "completed in run run-1" in run.said[0]
