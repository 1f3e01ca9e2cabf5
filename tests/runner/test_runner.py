"""The runner end to end: real `drillbook` process, real papermill, real kernels, real archive.

Each case asserts the exit code, the message, and what is (and is not) on disk.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DRILLBOOK, Project, cli

pytestmark = pytest.mark.integration


def only_record(project: Project) -> dict:
    runs = project.run_dirs()
    assert len(runs) == 1, runs
    return json.loads((runs[0] / "record.json").read_text())


def archived_notebook(project: Project) -> dict:
    """The executed notebook of the only run in the archive."""
    return json.loads((project.run_dirs()[0] / "notebook.ipynb").read_text())


def ledger_lines(project: Project) -> list[dict]:
    path = project.archive / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_passing_drill_archives_a_complete_bundle(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    result = cli(project, "run", "passes", "--env", "local")
    assert result.code == 0, result.output
    assert "PASSED passes on local" in result.stdout
    bundle = project.run_dirs()[0]
    assert sorted(p.name for p in bundle.iterdir()) == ["MANIFEST", "notebook.html", "notebook.ipynb", "record.json"]
    record = json.loads((bundle / "record.json").read_text())
    assert record["status"] == "passed" and record["reason"] is None
    assert [s["status"] for s in record["steps"]] == ["passed"]
    assert record["checks"][0]["passed"] is True
    measure = record["measures"][0]
    assert (measure["value"], measure["objective_value"], measure["verdict"]) == (1.5, 30.0, "met")
    assert record["results"]["status"] == "passed"  # glued in scrapbook's format, read back from the notebook
    import scrapbook  # and scrapbook itself reads that scrap (slow to import: only in this test)

    scraps = scrapbook.read_notebook(str(bundle / "notebook.ipynb")).scraps
    assert scraps["drillbook_results"].data == record["results"] and scraps["drillbook_results"].encoder == "json"
    assert record["source"]["sha256"] and record["controls"] == ["SOC 2 CC7.5"]
    assert record["parameters"]["env"] == "local" and record["parameters"]["run_id"] == record["run_id"]
    assert "status-passed" in (bundle / "notebook.html").read_text()
    entries = ledger_lines(project)
    assert [(e["seq"], e["run_id"], e["status"]) for e in entries] == [(1, record["run_id"], "passed")]
    assert cli(project, "verify").code == 0


def test_failed_check_is_failed_not_error_and_archived(project: Project) -> None:
    project.add_notebook("check_fails.ipynb")
    result = cli(project, "run", "check_fails", "--env", "local")
    assert result.code == 1
    assert "FAILED check_fails on local — check failed: replica caught up" in result.stdout
    record = only_record(project)
    assert record["status"] == "failed"
    assert [c["passed"] for c in record["checks"]] == [False, True]
    nb = archived_notebook(project)
    assert "drillbook: this run ended `failed`" in "".join(nb["cells"][0]["source"])


def test_raised_exception_is_error_cleanup_runs_and_failing_cell_marked(project: Project, tmp_path: Path) -> None:
    project.add_notebook("raises.ipynb")
    marker = tmp_path / "cleanup-ran"
    result = cli(project, "run", "raises", "--env", "local", "-p", f"marker_path={marker}")
    assert result.code == 1
    assert "ERROR raises on local — ValueError: boom: the standby refused to promote" in result.stdout
    assert marker.read_text() == "cleaned"
    record = only_record(project)
    assert record["status"] == "error"
    assert record["cleanups"][0]["status"] == "passed"
    assert record["failing_cell"]["source_first_line"].startswith("raise ValueError")
    nb = archived_notebook(project)
    failing = [c for c in nb["cells"] if "drillbook-failed-cell" in c["metadata"].get("tags", [])]
    assert len(failing) == 1 and "raise ValueError" in "".join(failing[0]["source"])
    assert "ValueError" in (project.run_dirs()[0] / "notebook.html").read_text()


def test_kernel_death_is_error_with_evidence(project: Project) -> None:
    project.add_notebook("kernel_dies.ipynb")
    result = cli(project, "run", "kernel_dies", "--env", "local")
    assert result.code == 1
    assert "the kernel died" in result.stdout
    record = only_record(project)
    assert record["status"] == "error"
    assert record["steps"][0]["title"] == "About to die"  # journal written before the death survives
    assert record["failing_cell"] is not None


def test_execution_timeout_interrupts_runs_cleanups_and_records_error(project: Project, tmp_path: Path) -> None:
    project.add_notebook("sleeps.ipynb")
    marker = tmp_path / "cleanup-ran"
    t0 = time.monotonic()
    result = cli(project, "run", "sleeps", "--env", "local", "--timeout", "4", "-p", f"marker_path={marker}")
    elapsed = time.monotonic() - t0
    assert result.code == 1
    assert "execution timeout: the notebook ran longer than 4 s" in result.stdout
    assert elapsed < 40, elapsed  # the 60 s sleep was cut short
    assert marker.read_text() == "cleaned"
    record = only_record(project)
    assert record["status"] == "error"
    assert record["steps"][-1]["status"] == "failed" and "KeyboardInterrupt" in record["steps"][-1]["detail"]


def _start_slow(project: Project, marker: Path, seconds: float = 60) -> subprocess.Popen:
    project.add_notebook("slow.ipynb")
    proc = subprocess.Popen(
        [str(DRILLBOOK), "run", "slow", "--env", "local", "-p", f"marker_path={marker}", "-p", f"seconds={seconds}"],
        cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not _waiting_step_started(project):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "slow notebook never started"
        time.sleep(0.1)
    return proc


def _waiting_step_started(project: Project) -> bool:
    """True once the kernel has journalled the "Wait" step (read via the in-flight marker)."""
    for marker in (project.state / "inflight").glob("*.json"):
        run_dir = Path(json.loads(marker.read_text())["run_dir"])
        try:
            steps = json.loads((run_dir / "journal.json").read_text())["steps"]
        except (OSError, ValueError, KeyError):
            return False
        return any(step["title"] == "Wait" for step in steps)
    return False


def proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name ([0] state, [1] parent, [19] start time), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_stops(pid: int, start: str, within: float = 10.0) -> bool:
    """True once ``pid`` runs nothing: gone, reused by another process, or a zombie left for
    init to reap. Polls (bounded) for that truth instead of sleeping a fixed time."""
    deadline = time.monotonic() + within
    while True:
        fields = proc_stat(pid)
        if fields is None or fields[19] != start or fields[0] in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def test_sigterm_aborts_the_run_runs_cleanups_and_archives(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "cleanup-ran"
    proc = _start_slow(project, marker)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "ABORTED slow on local" in out
    assert marker.read_text() == "cleaned"
    assert only_record(project)["status"] == "aborted"


def test_sigkill_of_the_runner_becomes_an_aborted_record_on_the_next_command(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "cleanup-ran"
    proc = _start_slow(project, marker)
    markers = list((project.state / "inflight").glob("*.json"))
    assert len(markers) == 1
    kernel_pid = json.loads(markers[0].read_text())["kernel_pid"]
    assert kernel_pid
    kernel_start = proc_stat(kernel_pid)[19]
    proc.kill()
    proc.wait(timeout=10)
    assert project.run_dirs() == []  # nothing archived yet: the runner died
    result = cli(project, "status")
    assert result.code == 0
    assert "as aborted: its runner was killed" in result.stderr
    record = only_record(project)
    assert record["status"] == "aborted" and "was killed" in record["reason"]
    assert record["steps"][0]["title"] == "Wait"  # the journal written by the kernel was kept
    assert not list((project.state / "inflight").glob("*.json"))
    # The orphaned kernel was stopped. Killed, it stays a zombie until init reaps it: a pid that
    # still answers os.kill(pid, 0) may be dead. Ask /proc whether it still runs.
    assert process_stops(kernel_pid, kernel_start), Path(f"/proc/{kernel_pid}/stat").read_text()
    assert "aborted" in result.stdout
    assert cli(project, "verify").code == 0
    assert cli(project, "status").stderr == ""  # recovered once only


def test_two_runs_cannot_act_on_one_environment_at_once(project: Project, tmp_path: Path) -> None:
    proc = _start_slow(project, tmp_path / "m", seconds=8)
    project.add_notebook("passes.ipynb")
    second = cli(project, "run", "passes", "--env", "local")
    assert second.code == 2
    assert "error: environment 'local' is busy: run " in second.stderr and "slow" in second.stderr
    assert "hint: wait for the other run to finish, or pass --wait SECONDS" in second.stderr
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert [r["drill"] for r in ledger_lines(project)] == ["slow"]
    third = cli(project, "run", "passes", "--env", "local")  # the lock is released afterwards
    assert third.code == 0


def test_waiting_run_starts_once_the_environment_is_free(project: Project, tmp_path: Path) -> None:
    proc = _start_slow(project, tmp_path / "m", seconds=2)
    project.add_notebook("passes.ipynb")
    second = cli(project, "run", "passes", "--env", "local", "--wait", "60")
    proc.communicate(timeout=60)
    assert second.code == 0, second.output
    assert [r["drill"] for r in ledger_lines(project)] == ["slow", "passes"]


def test_gate_not_approved_fails_at_once_naming_the_gate(project: Project, tmp_path: Path) -> None:
    project.add_notebook("gated.ipynb")
    marker = tmp_path / "promoted"
    t0 = time.monotonic()
    result = cli(project, "run", "gated", "--env", "local", "-p", f"marker_path={marker}")
    assert time.monotonic() - t0 < 30  # never waits for input
    assert result.code == 1
    assert "gate 'promote' (step 'Promote') is not approved" in result.stdout
    assert not marker.exists()
    assert only_record(project)["status"] == "error"


def test_approved_gate_runs_the_step(project: Project, tmp_path: Path) -> None:
    project.add_notebook("gated.ipynb")
    marker = tmp_path / "promoted"
    result = cli(project, "run", "gated", "--env", "local", "--approve", "promote", "-p", f"marker_path={marker}")
    assert result.code == 0, result.output
    assert marker.read_text() == "promoted"
    record = only_record(project)
    assert record["gates"][0]["gate"] == "promote" and record["approve"] == ["promote"]


def test_dry_run_prints_the_plan_and_changes_nothing(project: Project, tmp_path: Path) -> None:
    project.add_notebook("gated.ipynb")
    marker = tmp_path / "promoted"
    result = cli(project, "run", "gated", "--env", "local", "--dry-run", "-p", f"marker_path={marker}")
    assert result.code == 0, result.output
    assert not marker.exists()
    record = only_record(project)
    assert record["dry_run"] is True
    assert record["steps"][0]["status"] == "dry-run" and record["steps"][0]["detail"] == f"would: write {marker}"
    nb_text = (project.run_dirs()[0] / "notebook.ipynb").read_text()
    assert "DRY RUN, would: write" in nb_text


def test_production_refuses_a_mutating_run_without_a_change_reference(project: Project, tmp_path: Path) -> None:
    from approvalsupport import approve, dry_run, production

    keys = production(project, tmp_path)  # production needs an approval too (tests/test_approvals.py)
    marker = tmp_path / "promoted"
    approval = approve(project, dry_run(project, "-p", f"marker_path={marker}"), keys["alice"])
    as_bob = {"DRILLBOOK_OPERATOR": "bob"}
    refused = cli(project, "run", "gated", "--env", "prod", "--approval", approval, "-p", f"marker_path={marker}",
                  env=as_bob)
    assert refused.code == 1
    assert "changes production environment 'prod' and no change reference was given" in refused.stdout
    assert not marker.exists()
    allowed = cli(project, "run", "gated", "--env", "prod", "--approval", approval, "--change", "CHG-42",
                  "-p", f"marker_path={marker}", env=as_bob)
    assert allowed.code == 0, allowed.output
    assert marker.exists()
    assert json.loads((project.run_dirs()[-1] / "record.json").read_text())["change"] == "CHG-42"


def test_plain_papermill_notebook_runs_with_only_its_own_parameters(project: Project, tmp_path: Path) -> None:
    path = project.add_notebook("plain.ipynb", folder="elsewhere")
    result = cli(project, "run", str(path), "--env", "local", "-p", "count=4", "-p", "verbose=true")
    assert result.code == 0, result.output
    record = only_record(project)
    assert record["kind"] == "notebook" and record["drill"] == "plain"
    assert record["parameters"] == {"count": 4, "verbose": True}  # no runner parameters injected
    nb = archived_notebook(project)
    assert any("x 2.0 True" in "".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


def test_progress_is_reported_per_cell(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    result = cli(project, "run", "passes", "--env", "local")
    assert "passes@local [6/6] ✓ drill.finish()" in result.stderr  # 5 cells + injected parameters


def test_drill_that_never_calls_finish_is_judged_by_its_checks(project: Project, tmp_path: Path) -> None:
    project.add_notebook("no_finish.ipynb")
    marker = tmp_path / "cleanup-ran"
    result = cli(project, "run", "no_finish", "--env", "local", "-p", f"marker_path={marker}")
    assert result.code == 1
    assert "FAILED no_finish on local — check failed: replica caught up" in result.stdout
    assert marker.read_text() == "cleaned"  # cleanups still ran, at kernel exit
    record = only_record(project)
    assert record["status"] == "failed" and "finish() was not called" in record["note"]


def test_the_record_says_who_ran_it_which_incident_and_how_each_gate_was_approved(project: Project,
                                                                                    tmp_path: Path) -> None:
    project.add_notebook("gated.ipynb")
    who = {"DRILLBOOK_OPERATOR": "dana", "JUPYTERHUB_USER": ""}
    (project.root / "parameters" / "schedule.yaml").write_text(
        "runs:\n  - {drill: gated, env: local, cron: '@yearly', approve: [promote], "
        f"parameters: {{marker_path: '{tmp_path / 'scheduled'}'}}}}\n")
    assert cli(project, "run", "--due", env=who).code == 0
    assert only_record(project)["gates"][0]["method"] == "schedule"
    ran = cli(project, "run", "gated", "--env", "local", "--approve", "promote", "-p", f"marker_path={tmp_path / 'p'}",
              "--severity", "p2", "--incident", "INC-9", env=who)
    assert ran.code == 0, ran.output
    (rec,) = [r for r in (json.loads((d / "record.json").read_text()) for d in project.run_dirs()) if r.get("incident")]
    assert rec["mode"] == "run" and rec["operator"].startswith("dana@") and rec["operator_source"] == "DRILLBOOK_OPERATOR"
    assert (rec["severity"], rec["incident"]) == ("P2", "INC-9")
    (gate,) = rec["gates"]
    assert gate["method"] == "approve" and gate["at"] <= rec["steps"][0]["started_at"]  # given when the run began
