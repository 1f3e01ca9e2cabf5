"""A runbook run by a person in a real Jupyter kernel is a run: locked, journalled, archived, signed.

Each test starts a real ipykernel with jupyter_client (loopback, free ports) in a temporary
project and executes cells one by one, as a person in JupyterLab would, then looks at what the
archive, ``drillbook status`` and ``drillbook verify`` say. No browser: the notebook's own screen
is what the kernel sent.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import REPO, Project, cli
from drillbook import journal
from drillbook.errors import LockBusy
from drillbook.incidentfile import IncidentError, load_incident_file, validate_incident, validate_severity
from drillbook.runner import locks
from drillbook.site import build as site_build
from jupyter_client import KernelManager
from labsupport import LabProject, lab_project  # noqa: F401  (the session's lab)

CANARY = "c4nary-Interactive-s3cret"
WAIT = 120.0  # a bound for the truth to arrive, never a pass/fail timing


@dataclass
class Cell:
    text: str = ""  # what the notebook showed: streams, results, errors
    results: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None


class Kernel:
    """One real kernel, driven like a person at a notebook."""

    def __init__(self, cwd: Path, env: dict[str, str], sockets: Path) -> None:
        full = {k: v for k, v in os.environ.items() if k not in ("DRILLBOOK_RUN_DIR", "JUPYTERHUB_USER")}
        # IPC sockets in a private folder, as the runner's kernels use: never a TCP port
        self.km = KernelManager(kernel_name="python3", transport="ipc", ip=str(sockets / "kernel"))
        self.km.start_kernel(cwd=str(cwd), env={**full, **env})
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=WAIT)

    def send(self, code: str) -> str:
        return self.kc.execute(code, allow_stdin=True)

    def collect(self, msg_id: str, answer: Any = None) -> Cell:
        """The cell's outputs until the kernel is idle again; ``answer(prompt)`` replies to input()."""
        cell = Cell()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.kc.stdin_channel.msg_ready():
                request = self.kc.get_stdin_msg(timeout=1)
                assert answer is not None, f"unexpected prompt: {request['content']['prompt']}"
                self.kc.input(answer(request["content"]["prompt"]))
            if not self.kc.iopub_channel.msg_ready():
                time.sleep(0.01)
                continue
            msg = self.kc.get_iopub_msg(timeout=1)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                cell.text += content["text"]
            elif kind in ("execute_result", "display_data"):
                cell.results.append(content) if kind == "execute_result" else None
                cell.text += content["data"].get("text/plain", "") + "\n"
            elif kind == "error":
                cell.error = content
                cell.text += "\n".join(content["traceback"]) + "\n"
            elif kind == "status" and content["execution_state"] == "idle":
                return cell
        raise AssertionError(f"the kernel did not finish the cell within {WAIT} s")

    def run(self, code: str, answer: Any = None) -> Cell:
        return self.collect(self.send(code), answer)

    def stop(self, now: bool = False) -> None:
        """Shut the kernel down as JupyterLab does (``now``: kill it, the test is over)."""
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=now)


def _runbook(project: Project, name: str = "tiny") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["drillbook"] = {"kind": "runbook", "title": "Tiny runbook", "owner": "tests"}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('env = "local"\ndry_run = True\napprove = []\nrun_id = None\nchange = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import drillbook\ndrill = drillbook.start(env=env, dry_run=dry_run, approve=approve, run_id=run_id)\n"
        "drill.step('Fence a', lambda: 1, mutating=True)\ndrill.finish()")]
    path = project.root / "runbooks" / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def person(project: Project, tmp_path_factory: pytest.TempPathFactory):
    """A kernel in the project, run by alice, on the tiny runbook; stopped at the end."""
    _runbook(project)
    project.write_env("local", "description: test\nhosts:\n  here:\n    shell: local\n"
                      "secrets:\n  token: env:T_CANARY\n")
    project.write_env("staging", "description: staging\nhosts:\n  here:\n    shell: local\n")
    kernels: list[Kernel] = []

    def start(**extra: str) -> Kernel:
        env = {"DRILLBOOK_OPERATOR": "alice", "JPY_SESSION_NAME": "runbooks/tiny.ipynb", "T_CANARY": CANARY,
               "DRILLBOOK_HOME": os.environ["DRILLBOOK_HOME"], **extra}
        kernels.append(Kernel(project.root, env, tmp_path_factory.mktemp("kernel")))
        return kernels[-1]

    yield start
    for kernel in kernels:
        kernel.stop(now=True)


def _bundle(project: Project) -> tuple[Path, dict[str, Any]]:
    (bundle,) = project.run_dirs()
    return bundle, json.loads((bundle / "record.json").read_text())


def db(project: Project, *args: str) -> Any:
    """The real drillbook command, with the environment the kernel had (the secret resolves)."""
    return cli(project, *args, env={"T_CANARY": CANARY, "DRILLBOOK_OPERATOR": "alice"})


def _lock_is_free(project: Project) -> bool:
    """The environment's lock can be taken now (what ``drillbook run`` does first)."""
    try:
        with locks.hold(project.state, "local", "probe"):
            return True
    except LockBusy:
        return False


def _everything(bundle: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file())


# --------------------------------------------------------------------------- finish() → a verified bundle
def test_finish_archives_a_signed_interactive_bundle(project: Project, person: Any) -> None:
    k = person()
    k.run("import drillbook")
    opened = k.run("drill = drillbook.start(env='local', dry_run=False, severity='p1', incident='INC-42')")
    assert opened.error is None, opened.text
    assert opened.text.startswith("local · ") and "LIVE" in opened.text
    run_id = k.run("print(drill.run_id)").text.strip()
    assert f"[run {run_id}]" in opened.text  # every drillbook line names its run
    step = k.run("drill.step('Measure the lag', lambda: 0.133)")
    assert step.results == [] and "0.133" in step.text  # on the step's line, never echoed bare
    assert step.text.splitlines()[0].startswith("local · ")
    k.run(f"print('typed by the person: {CANARY}')\nprint(drill.secret('token'))")
    k.run("drill.step('Fence a', lambda: None, mutating=True)")
    done = k.run("drill.finish()")
    assert done.error is None and done.results == [], done.text  # no dict after finish()
    bundle = project.archive / "runs" / run_id
    assert f"Evidence: {bundle}" in done.text and "Changed: Fence a" in done.text
    assert (bundle / "MANIFEST").is_file() and (bundle / "notebook.html").is_file()
    rec = json.loads((bundle / "record.json").read_text())
    assert rec["mode"] == "interactive" and rec["status"] == "passed" and rec["drill"] == "tiny"
    assert rec["operator"].startswith("alice@") and rec["operator_source"] == "DRILLBOOK_OPERATOR"
    assert (rec["severity"], rec["incident"]) == ("P1", "INC-42") and rec["kind"] == "runbook"
    nb = json.loads((bundle / "notebook.ipynb").read_text())
    sources = [c["source"] for c in nb["cells"] if c["cell_type"] == "code"]
    assert sources[0].startswith("drill = drillbook.start(") and sources[-1] == "drill.finish()"
    assert [c["execution_count"] for c in nb["cells"] if c["cell_type"] == "code"] == [2, 3, 4, 5, 6, 7]
    assert all(c["metadata"]["drillbook"]["started_at"] <= c["metadata"]["drillbook"]["ended_at"]
               for c in nb["cells"] if c["cell_type"] == "code")
    assert "Changed: Fence a" in json.dumps(nb)  # the summary is part of the evidence
    data = _everything(bundle)
    for form in (CANARY.encode(), base64.b64encode(CANARY.encode())):
        assert form not in data
    assert b"[REDACTED:token]" in data
    assert db(project, "verify").code == 0
    status = db(project, "status")
    assert status.code == 0 and "tiny" in status.stdout
    assert not list((project.state / "inflight").glob("*.json"))
    assert _lock_is_free(project)
    _site_shows_the_person(project, run_id)


def _site_shows_the_person(project: Project, run_id: str) -> None:
    """The site's page of the run (generated, as publish does before MkDocs) says who, how, which incident."""
    shutil.copy(REPO / "mkdocs.yml", project.root / "mkdocs.yml")
    (project.root / "docs").mkdir()
    site_build.generate(project.root, project.archive, state=project.state)
    page = (project.root / "docs" / "evidence" / "runs" / run_id / "index.md").read_text()
    assert "interactive (a person in a notebook)" in page and "(from DRILLBOOK\\_OPERATOR)" in page
    assert "INC-42" in page and "P1" in page and CANARY not in page


# --------------------------------------------------------------------------- one run per environment
def test_a_second_run_on_the_environment_is_refused_while_one_is_open(project: Project, person: Any) -> None:
    first = person()
    first.run("import drillbook\ndrill = drillbook.start(env='local', dry_run=False)")
    run_id = first.run("print(drill.run_id)").text.strip()
    other = person(DRILLBOOK_OPERATOR="bob")
    refused = other.run("import drillbook\ndrill = drillbook.start(env='local')")
    assert refused.error is not None and refused.error["ename"] == "LockBusy"
    assert len(refused.error["traceback"]) == 2 and "Traceback" not in refused.text  # one line and the hint
    assert "alice@" in refused.text and run_id in refused.text and "since" in refused.text
    ran = db(project, "run", "tiny", "--env", "local", "--dry-run")
    assert ran.code == 2 and "busy" in ran.stderr and "alice@" in ran.stderr and run_id in ran.stderr
    assert other.run("drill = drillbook.start(env='staging')").error is None  # another environment is free
    first.run("drill.finish()")
    assert _lock_is_free(project)


def test_picker_and_start_again_keep_the_environment_of_the_open_run(project: Project, person: Any) -> None:
    k = person()
    picker_cell = "import drillbook\npicker = drillbook.ui.environment_picker('local')"
    k.run(picker_cell)
    k.run("picker.value = 'staging'")  # the person picks staging in the dropdown
    k.run(picker_cell)  # Run All re-runs the picker cell
    assert k.run("print(picker.value)").text.strip() == "staging"
    start_cell = "drill = drillbook.start(env=picker.value, dry_run=True)"
    k.run(start_cell)
    run_id = k.run("print(drill.run_id)").text.strip()
    k.run(picker_cell)
    assert k.run("print(picker.value)").text.strip() == "staging"
    again = k.run(start_cell)
    assert again.error is None and "kept" in again.text
    assert k.run("print(drill.run_id)").text.strip() == run_id
    refused = k.run("drillbook.start(env='local')")
    assert refused.error is not None and refused.error["ename"] == "RunOpen" and "finish()" in refused.text
    assert len(refused.error["traceback"]) == 2
    bad = k.run("drillbook.start(env=picker.value, dry_run=True, severity='P7')")
    assert bad.error is not None and bad.error["ename"] == "IncidentError"
    still = k.run("print(drill.run_id, drill.env.name, drill.data['status'])").text.split()
    assert still == [run_id, "staging", "running"]  # refusals leave the open run alone
    k.run("drill.finish()")
    _, rec = _bundle(project)
    assert rec["env"] == "staging" and rec["run_id"] == run_id and rec["dry_run"] is True
    assert rec["status"] == "passed"


# --------------------------------------------------------------------------- gates
def test_a_gate_is_timestamped_when_the_person_confirms_it(project: Project, person: Any) -> None:
    k = person()
    k.run("import drillbook\ndrill = drillbook.start(env='local', dry_run=False)")
    times: dict[str, str] = {}

    def answer(prompt: str) -> str:
        assert "Type promote" in prompt
        times["prompted"] = journal.now_iso()
        while journal.now_iso() <= times["prompted"]:  # the person answers later than the prompt came
            time.sleep(0.001)
        times["answered"] = journal.now_iso()
        return "promote"

    step = k.run("drill.step('Promote b', lambda: None, mutating=True, gate='promote')", answer)
    assert step.error is None, step.text
    k.run("drill.approve_gate('rollback')")  # what the gate panel's Approve button calls
    k.run("drill.step('Roll back', lambda: None, mutating=True, gate='rollback')")
    k.run("drill.finish()")
    _, rec = _bundle(project)
    prompt, pressed, panel = rec["gates"]
    assert prompt["method"] == "prompt" and prompt["asked_at"] <= times["prompted"] < prompt["at"]
    assert prompt["at"] >= times["answered"]
    assert panel["method"] == "panel" and panel["at"] == pressed["at"] and "in advance" not in panel["how"]


# --------------------------------------------------------------------------- interrupted, killed
def test_an_interrupt_mid_step_archives_an_aborted_run_naming_what_changed(project: Project, person: Any,
                                                                           tmp_path: Path) -> None:
    k = person()
    k.run("import drillbook, pathlib, time\ndrill = drillbook.start(env='local', dry_run=False)\n"
          "drill.cleanup(lambda: None, 'Unfence a')")
    k.run("drill.step('Fence a', lambda: None, mutating=True)")
    started = tmp_path / "started"
    msg_id = k.send(f"def wait():\n    pathlib.Path({str(started)!r}).touch()\n    while True:\n        time.sleep(0.05)\n"
                    "drill.step('Promote b', wait, mutating=True)")
    deadline = time.monotonic() + WAIT
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    k.km.interrupt_kernel()
    cell = k.collect(msg_id)
    assert cell.error is not None and cell.error["ename"] == "KeyboardInterrupt"
    assert len(cell.error["traceback"]) == 2 and "step 'Promote b' interrupted" in cell.text  # no traceback on screen
    assert "Changed: Fence a" in cell.text and "Cleanups run: Unfence a" in cell.text
    bundle, rec = _bundle(project)
    assert rec["status"] == "aborted" and rec["mode"] == "interactive"
    assert [(s["title"], s["status"]) for s in rec["steps"]] == [("Fence a", "passed"), ("Promote b", "failed")]
    assert rec["failing_cell"]["source_first_line"].startswith("def wait")
    page = (bundle / "notebook.html").read_text()
    assert "<details><summary>Full traceback" in page and "Traceback (most recent call last)" in page
    assert db(project, "verify").code == 0


def _interrupt_idle(k: Kernel) -> None:
    """SIGINT to a kernel that waits between cells, as the runner's supervisor sends it."""
    os.kill(k.km.provisioner.process.pid, signal.SIGINT)
    time.sleep(0.3)  # a kernel waiting for messages handles it at once; the next cell is sent after that


def test_a_runners_interrupt_between_cells_stops_the_next_cell_and_a_persons_is_dropped(person: Any) -> None:
    runner, someone = person(), person()
    for k, unattended in ((runner, True), (someone, False)):
        k.run(f"from drillbook import kernel\nkernel.hook(lambda exc: None, unattended={unattended})")
        _interrupt_idle(k)
    stopped = runner.run("ran = True")
    assert stopped.error is not None and stopped.error["ename"] == "KeyboardInterrupt", stopped.text
    assert runner.run("print(globals().get('ran'))").text.strip() == "None"  # stopped before its first statement
    assert runner.run("print('then cells run again')").text.strip() == "then cells run again"  # delivered once
    assert someone.run("print('the next cell ran')").text.strip() == "the next cell ran"
    msg = someone.send("import time\ntime.sleep(30)")  # a person's Stop still interrupts a running cell
    time.sleep(0.5)
    os.kill(someone.km.provisioner.process.pid, signal.SIGINT)
    cell = someone.collect(msg)
    assert cell.error is not None and cell.error["ename"] == "KeyboardInterrupt", cell.text


def test_a_killed_kernel_is_archived_as_aborted_by_the_next_command(project: Project, person: Any) -> None:
    k = person()
    k.run("import drillbook\ndrill = drillbook.start(env='local', dry_run=False)")
    run_id = k.run("print(drill.run_id)").text.strip()
    k.run("drill.step('Fence a', lambda: None, mutating=True)")
    os.kill(k.km.provisioner.process.pid, signal.SIGKILL)
    k.km.provisioner.process.wait()
    status = db(project, "status")
    assert f"recorded run {run_id} as aborted" in status.stderr, status.stderr
    bundle, rec = _bundle(project)
    assert rec["status"] == "aborted" and "kernel" in rec["reason"] and rec["mode"] == "interactive"
    assert rec["steps"][0]["title"] == "Fence a"
    nb = json.loads((bundle / "notebook.ipynb").read_text())
    assert "drill.step('Fence a'" in json.dumps(nb)
    assert db(project, "verify").code == 0
    assert _lock_is_free(project)  # the lock died with the kernel


def test_a_kernel_shut_down_before_finish_archives_its_run(project: Project, person: Any) -> None:
    k = person()
    k.run("import drillbook\ndrill = drillbook.start(env='local', dry_run=False)")
    k.run("drill.step('Fence a', lambda: None, mutating=True)")
    k.stop()
    bundle, rec = _bundle(project)
    assert rec["status"] == "aborted" and "shut down" in rec["reason"] and (bundle / "MANIFEST").is_file()
    assert not list((project.state / "inflight").glob("*.json"))  # archived by the kernel, not left to recovery


# --------------------------------------------------------------------------- bad input, operator
def test_severity_and_incident_come_from_the_call_or_incident_json(project: Project, person: Any) -> None:
    k = person()
    bad = k.run("import drillbook\ndrillbook.start(env='local', severity='P9')")
    assert bad.error["ename"] == "IncidentError" and len(bad.error["traceback"]) == 2
    assert not project.run_dirs() and not (project.state / "inflight").exists()
    ran = db(project, "run", "tiny", "--env", "local", "--incident", "../x")
    assert ran.code == 2 and "bad incident id" in ran.stderr and not project.run_dirs()
    # a per-incident working copy: incident.json next to the notebook says where and what for
    (project.root / "incident.json").write_text(json.dumps({"runbook": "tiny", "env": "staging", "severity": "P2",
                                                            "incident": "INC-7", "source_sha256": "0" * 64}))
    other = k.run("drillbook.start(env='local')")
    assert other.error["ename"] == "IncidentError" and "staging" in other.text and len(other.error["traceback"]) == 2
    k.run("drill = drillbook.start()\ndrill.finish()")
    _, rec = _bundle(project)
    assert (rec["env"], rec["severity"], rec["incident"], rec["drill"]) == ("staging", "P2", "INC-7", "tiny")


def test_incident_json_and_the_operator_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "incident.json").write_text(json.dumps({"runbook": "tiny", "env": "staging", "severity": "P2",
                                                        "incident": "INC-7", "source_sha256": "ab"}))
    found = load_incident_file(tmp_path)
    assert found is not None and (found.env, found.severity, found.incident) == ("staging", "P2", "INC-7")
    (tmp_path / "incident.json").write_text(json.dumps({"env": "../etc"}))
    with pytest.raises(Exception, match="not an environment name"):
        load_incident_file(tmp_path)
    for bad in ("INC 42", "x" * 65, "a/b", ""):
        if bad:
            with pytest.raises(IncidentError):
                validate_incident(bad)
    assert validate_severity("p0") == "P0"
    monkeypatch.setenv("JUPYTERHUB_USER", "carol")
    monkeypatch.setenv("DRILLBOOK_OPERATOR", "alice")
    assert journal.operator_identity()[1] == "JUPYTERHUB_USER" and journal.operator_name().startswith("carol@")
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert journal.operator_identity()[1] == "DRILLBOOK_OPERATOR"
    monkeypatch.delenv("DRILLBOOK_OPERATOR")
    assert journal.operator_identity()[1] == "os-user"


# --------------------------------------------------------------------------- the real failover runbook
def test_the_failover_runbook_cell_by_cell_in_dry_run_on_the_lab(lab_project: LabProject, tmp_path: Path,
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """The real runbook's cells, run one by one against the lab in dry-run: a passed interactive
    bundle that changed nothing. Its archive and state are this test's own, not the lab project's."""
    copy = tmp_path / "postgres-failover.ipynb"
    copy.write_bytes((REPO / "runbooks" / "postgres-failover.ipynb").read_bytes())
    where = {"DRILLBOOK_PROJECT": str(lab_project.root), "DRILLBOOK_ARCHIVE": str(tmp_path / "archive"),
             "DRILLBOOK_STATE": str(tmp_path / "state")}
    before = lab_project.postgres().replication.roles()
    k = Kernel(tmp_path, {"DRILLBOOK_OPERATOR": "alice", "JPY_SESSION_NAME": str(copy),
                          "DRILLBOOK_HOME": os.environ["DRILLBOOK_HOME"], **where}, tmp_path_factory.mktemp("kernel"))
    shown = ""
    try:
        for cell in nbformat.read(str(copy), as_version=4).cells:
            if cell.cell_type == "code":
                ran = k.run(cell.source)
                shown += ran.text
                assert ran.error is None, ran.text
                tagged = [line for line in ran.text.splitlines() if " │ " in line]
                assert all(line.startswith("local · DRY-RUN │ ") for line in tagged), ran.text
    finally:
        k.stop(now=True)
    assert lab_project.postgres().replication.roles() == before  # a dry run changes nothing
    (bundle,) = (tmp_path / "archive" / "runs").iterdir()
    rec = json.loads((bundle / "record.json").read_text())
    assert (rec["drill"], rec["kind"], rec["mode"], rec["status"]) == ("postgres-failover", "runbook", "interactive", "passed")
    assert [s["status"] for s in rec["steps"] if s["mutating"]] == ["dry-run"] * 3
    assert "Changed: nothing" in (bundle / "notebook.ipynb").read_text()
    assert "Post this run's evidence bundle" in shown or "Nothing was changed" in shown
    assert f"Evidence: {bundle}" in shown  # the bundle the last cell tells the person to post exists
    assert cli(lab_project.root, "verify", env=where).code == 0
