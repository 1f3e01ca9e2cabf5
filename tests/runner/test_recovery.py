"""Recovery of runs whose runner stopped early: killed at each step of archiving, a full disk,
and in-flight markers the runner did not write. Real runner processes, kernels and archive.

A runner is stopped at a named point by running the real CLI through a small wrapper that
replaces one function with "SIGKILL myself" or "raise ENOSPC" (``_wrapped``).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DRILLBOOK, Project, cli
from test_runner import ledger_lines, only_record, proc_stat, process_stops

pytestmark = pytest.mark.integration

TOKEN = "tok-9d1c-default-secret-e07a"  # the value behind the notebook's default token_ref

WRAPPER = '''
import errno, os, signal, sys
from drillbook import cli
from drillbook.evidence import archive, ledger
from drillbook.runner import inflight

name, how = os.environ["DRILLBOOK_TEST_STOP_AT"].split(":")
OWNERS = {"write_manifest": archive, "append": ledger, "write_head": ledger, "_write_scrubbed": archive}
OWNERS[name] = OWNERS.get(name) or inflight.Marker  # "finish"
real = getattr(OWNERS[name], name)

def stop(*args, **kwargs):
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "enospc" or (how == "enospc-html" and str(args[0]).endswith("notebook.html")):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(*args, **kwargs)

setattr(OWNERS[name], name, stop)
cli.main(sys.argv[1:])
'''


def _wrapped(project: Project, tmp_path: Path, stop_at: str, *args: str) -> subprocess.CompletedProcess:
    """The real CLI with one function replaced (see WRAPPER): ``stop_at`` is "name:how"."""
    script = tmp_path / "stop_at.py"
    script.write_text(WRAPPER)
    return subprocess.run([sys.executable, str(script), *args], cwd=project.root, capture_output=True, text=True,
                          env={**os.environ, "DRILLBOOK_TEST_STOP_AT": stop_at, "COLUMNS": "200"}, timeout=300)


def _run_root() -> Path:
    return Path(os.environ["DRILLBOOK_HOME"]) / "runs"


def _markers(project: Project) -> list[Path]:
    return sorted((project.state / "inflight").glob("*.json"))


@pytest.fixture
def stray_pids():
    """Processes a test started or that a broken recovery left running: killed afterwards."""
    pids: list[tuple[int, str]] = []
    yield pids
    for pid, start in pids:
        fields = proc_stat(pid)
        if fields and fields[19] == start:
            os.kill(pid, signal.SIGKILL)


def _start_slow_secret(project: Project, tmp_path: Path, stray: list[tuple[int, str]]) -> tuple[subprocess.Popen, dict, Path]:
    """A runner whose kernel printed TOKEN, started a child process and now sleeps."""
    project.add_notebook("slow_secret.ipynb")
    flag = tmp_path / "m"
    proc = subprocess.Popen([str(DRILLBOOK), "run", "slow_secret", "--env", "local", "-p", f"marker_path={flag}"],
                            cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DRILLBOOK_TEST_TOKEN": TOKEN})
    deadline = time.monotonic() + 60
    while not (Path(f"{flag}.started").exists() and _markers(project)
               and json.loads(_markers(project)[0].read_text()).get("kernel_pid")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "slow_secret never started"
        time.sleep(0.1)
    info = json.loads(_markers(project)[0].read_text())
    for pid in (info["kernel_pid"], int(Path(f"{flag}.child").read_text())):
        stray.append((pid, proc_stat(pid)[19]))
    return proc, info, flag


# --------------------------------------------------------------------------- killed mid-run
def test_killed_runs_kernel_and_its_children_are_stopped_and_its_private_folder_removed(
        project: Project, tmp_path: Path, stray_pids: list) -> None:
    proc, info, flag = _start_slow_secret(project, tmp_path, stray_pids)
    run_dir = Path(info["run_dir"])
    where = (run_dir.parent, stat.S_IMODE(run_dir.stat().st_mode), stat.S_IMODE(run_dir.parent.stat().st_mode))
    assert (run_dir / "output.ipynb").exists()  # the unscrubbed notebook, in flight
    proc.kill()
    proc.wait(timeout=10)
    result = cli(project, "status", env={"DRILLBOOK_TEST_TOKEN": TOKEN})
    assert result.code == 0, result.output
    assert "as aborted: its runner was killed" in result.stderr
    assert only_record(project)["status"] == "aborted"
    (kernel, kernel_start), (child, child_start) = stray_pids
    assert process_stops(kernel, kernel_start), proc_stat(kernel)
    assert process_stops(child, child_start), f"the kernel's child {child} survived: {proc_stat(child)}"
    assert not run_dir.exists()  # the unscrubbed notebook is gone with its folder
    assert where == (_run_root(), 0o700, 0o700)
    assert cli(project, "verify").code == 0


def test_killed_run_is_scrubbed_of_the_secrets_of_the_notebooks_parameter_defaults(
        project: Project, tmp_path: Path, stray_pids: list) -> None:
    proc, info, _ = _start_slow_secret(project, tmp_path, stray_pids)
    # Written below sys.stdout, so the kernel's own scrubbing never saw it: only recovery can.
    assert f"fd token: {TOKEN}" in (Path(info["run_dir"]) / "kernel.log").read_text()
    assert "token_ref" not in info["record"]["parameters"]  # a default, not given with -p
    proc.kill()
    proc.wait(timeout=10)
    result = cli(project, "status", env={"DRILLBOOK_TEST_TOKEN": TOKEN})
    assert result.code == 0, result.output
    bundle = project.run_dirs()[0]
    assert (bundle / "notebook.ipynb").is_file()  # the partial notebook was archived
    kernel_log = (bundle / "attachments" / "kernel.log").read_text()
    assert "fd token: [REDACTED:parameters.token_ref]" in kernel_log
    for path in (p for p in project.archive.rglob("*") if p.is_file()):
        assert TOKEN not in path.read_text(errors="replace"), f"the default's secret leaked into {path}"


# --------------------------------------------------------------------------- stopped while archiving
@pytest.mark.parametrize("stop_at", [
    "write_manifest:kill",  # bundle being written, not in place
    "append:kill",  # bundle renamed into place, not in the ledger
    "write_head:kill",  # in the ledger, HEAD not updated
    "finish:kill",  # archived, run folder and marker not removed
    "_write_scrubbed:enospc-html",  # disk full while writing the bundle
    "write_head:enospc",  # disk full while writing HEAD
])
def test_a_run_stopped_at_any_step_of_archiving_is_archived_once_with_its_true_status(
        project: Project, tmp_path: Path, stop_at: str) -> None:
    project.add_notebook("passes.ipynb")
    first = _wrapped(project, tmp_path, stop_at, "run", "passes", "--env", "local")
    if stop_at.endswith(":kill"):
        assert first.returncode == -signal.SIGKILL, first
    else:  # one clear line, and the run is kept for the next command
        assert first.returncode == 2, first
        assert "error: run " in first.stderr and "ended passed but could not be archived" in first.stderr
        assert "No space left on device" in first.stderr and "Traceback" not in first.stderr
        assert not list((project.archive / "runs").glob(".*.partial"))  # nothing half-written left
    assert len(_markers(project)) == 1
    run_id = _markers(project)[0].stem

    result = cli(project, "status")
    assert result.code == 0, result.output
    assert f"recorded run {run_id} as passed" in result.stderr
    assert [(e["run_id"], e["status"]) for e in ledger_lines(project)] == [(run_id, "passed")]
    assert only_record(project)["status"] == "passed"
    assert (project.run_dirs()[0] / "notebook.ipynb").exists()
    assert not _markers(project) and list(_run_root().iterdir()) == []
    for command in (("verify",), ("list",), ("status",)):
        again = cli(project, *command)
        assert again.code == 0 and again.stderr == "", (command, again.output)


def test_a_full_disk_that_stays_full_never_blocks_other_commands(project: Project, tmp_path: Path) -> None:
    project.add_notebook("passes.ipynb")
    assert _wrapped(project, tmp_path, "_write_scrubbed:enospc-html", "run", "passes", "--env", "local").returncode == 2
    still_full = _wrapped(project, tmp_path, "_write_scrubbed:enospc-html", "list")
    assert still_full.returncode == 0, still_full
    assert "could not be archived yet" in still_full.stderr and "No space left on device" in still_full.stderr
    assert len(_markers(project)) == 1 and project.run_dirs() == []
    assert "as passed" in cli(project, "list").stderr  # space freed: the next command archives it


def _with_file_size_limit(code: str, limit: int) -> subprocess.CompletedProcess:
    """Run ``code`` where no file may grow past ``limit`` bytes: writes are cut short as on a
    full disk (EFBIG instead of ENOSPC), at the real write, without root."""
    prelude = ("import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))\n")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60)


def test_a_ledger_line_cut_short_by_a_full_disk_is_undone(tmp_path: Path) -> None:
    from drillbook.evidence import keys, ledger

    archive, home = tmp_path / "archive", tmp_path / "home"
    home.mkdir()
    key = keys.load_or_create_signing_key(home)
    ledger.append(archive, key, {"run_id": "r1", "manifest_sha256": "a" * 64})
    before = (archive / "ledger.jsonl").read_bytes()
    code = (f"from pathlib import Path\nfrom drillbook.evidence import keys, ledger\n"
            f"key = keys.load_or_create_signing_key(Path({str(home)!r}))\n"
            f"ledger.append(Path({str(archive)!r}), key, {{'run_id': 'r2', 'manifest_sha256': 'b' * 64}})\n")
    cut = _with_file_size_limit(code, len(before) + 100)  # room for part of the second line only
    assert cut.returncode == 1 and "File too large" in cut.stderr, cut.stderr
    assert (archive / "ledger.jsonl").read_bytes() == before
    ledger.append(archive, key, {"run_id": "r2", "manifest_sha256": "b" * 64})  # space freed: appends again
    assert [e["run_id"] for e in ledger.read_entries(archive)] == ["r1", "r2"]


# --------------------------------------------------------------------------- markers not ours
def _victims(tmp_path: Path, stray: list[tuple[int, str]]) -> tuple[subprocess.Popen, Path, Path]:
    """A process, a folder and a journal that a forged marker points recovery at."""
    victim = subprocess.Popen(["sleep", "600"])
    stray.append((victim.pid, proc_stat(victim.pid)[19]))
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "data.txt").write_text("keep me")
    (folder / "journal.json").write_text(json.dumps({"status": "passed", "steps": [{"title": "forged"}]}))
    return victim, folder, folder / "journal.json"


def _assert_left_alone(project: Project, result, victim: subprocess.Popen, folder: Path, what: str) -> None:
    assert result.code == 0, result.output
    assert what in result.stderr and "left alone" in result.stderr, result.stderr
    assert victim.poll() is None and proc_stat(victim.pid)[0] not in ("Z", "X")  # not signalled
    assert (folder / "data.txt").read_text() == "keep me"
    assert project.run_dirs() == [] and ledger_lines(project) == []  # nothing signed from it
    assert len(_markers(project)) == 1  # reported, left for the operator


def _forged_info(run_id: str, victim: subprocess.Popen, folder: Path, project: Project) -> dict:
    return {"run_id": run_id, "pid": None, "proc_start": None, "kernel_pid": victim.pid,
            "kernel_start": proc_stat(victim.pid)[19], "run_dir": str(folder), "archive": str(project.archive),
            "t0": time.time(), "record": {"run_id": run_id, "env": "local", "parameters": {}},
            "scrub_parameters": {}, "outcome": None, "manifest_sha256": None}


def test_an_unsigned_marker_is_reported_and_never_acted_on(project: Project, tmp_path: Path, stray_pids: list) -> None:
    victim, folder, _ = _victims(tmp_path, stray_pids)
    run_id = "20260101T000000Z-forged-local-000000"
    marker = project.state / "inflight" / f"{run_id}.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps(_forged_info(run_id, victim, folder, project)))
    result = cli(project, "status")
    _assert_left_alone(project, result, victim, folder, "is not signed by this user's drillbook key")


def test_a_signed_marker_edited_afterwards_is_refused(project: Project, tmp_path: Path, stray_pids: list) -> None:
    from drillbook.evidence import keys
    from drillbook.runner import inflight

    victim, folder, _ = _victims(tmp_path, stray_pids)
    run_id = "20260101T000000Z-edited-local-000000"
    path = project.state / "inflight" / f"{run_id}.json"
    genuine = _forged_info(run_id, victim, folder, project)
    genuine.update(run_dir=str(_run_root() / "run-gone"), kernel_pid=None, kernel_start=None)
    inflight.Marker(path, genuine, keys.load_or_create_signing_key())._save()
    edited = json.loads(path.read_text())
    edited.update(run_dir=str(folder), kernel_pid=victim.pid, kernel_start=proc_stat(victim.pid)[19])
    path.write_text(json.dumps(edited))
    result = cli(project, "status")
    _assert_left_alone(project, result, victim, folder, "is not signed by this user's drillbook key")


def test_a_signed_marker_naming_a_folder_outside_the_run_root_is_refused(
        project: Project, tmp_path: Path, stray_pids: list) -> None:
    from drillbook.evidence import keys
    from drillbook.runner import inflight

    victim, folder, _ = _victims(tmp_path, stray_pids)
    run_id = "20260101T000000Z-outside-local-000000"
    path = project.state / "inflight" / f"{run_id}.json"
    inflight.Marker(path, _forged_info(run_id, victim, folder, project), keys.load_or_create_signing_key())._save()
    result = cli(project, "status")
    _assert_left_alone(project, result, victim, folder, "which is not a folder directly under the run root")


def test_a_run_folder_opened_to_others_is_refused(project: Project, tmp_path: Path, stray_pids: list) -> None:
    from drillbook.evidence import keys
    from drillbook.runner import inflight

    victim, _, _ = _victims(tmp_path, stray_pids)
    folder = inflight.new_run_dir()
    (folder / "data.txt").write_text("keep me")
    folder.chmod(0o755)
    run_id = "20260101T000000Z-opened-local-000000"
    path = project.state / "inflight" / f"{run_id}.json"
    inflight.Marker(path, _forged_info(run_id, victim, folder, project), keys.load_or_create_signing_key())._save()
    result = cli(project, "status")
    _assert_left_alone(project, result, victim, folder, "is open to others (mode 755)")
    shutil.rmtree(folder)


def test_a_marked_kernel_pid_is_signalled_only_if_it_is_that_runs_kernel(
        project: Project, tmp_path: Path, stray_pids: list) -> None:
    """A marker of ours whose kernel pid now names another process (a reused pid, say):
    that process is not signalled; the run's real kernel is found by its environment."""
    from drillbook.evidence import keys
    from drillbook.runner import inflight

    proc, info, _ = _start_slow_secret(project, tmp_path, stray_pids)
    proc.kill()
    proc.wait(timeout=10)
    victim, _, _ = _victims(tmp_path, stray_pids)
    info.update(kernel_pid=victim.pid, kernel_start=proc_stat(victim.pid)[19])
    inflight.Marker(_markers(project)[0], info, keys.load_or_create_signing_key())._save()
    result = cli(project, "status", env={"DRILLBOOK_TEST_TOKEN": TOKEN})
    assert result.code == 0 and "as aborted" in result.stderr, result.output
    assert victim.poll() is None and proc_stat(victim.pid)[0] not in ("Z", "X")
    (kernel, kernel_start), (child, child_start) = stray_pids[:2]
    assert process_stops(kernel, kernel_start) and process_stops(child, child_start)


def test_a_bundle_changed_before_recovery_is_not_signed_into_the_ledger(project: Project, tmp_path: Path) -> None:
    project.add_notebook("passes.ipynb")
    assert _wrapped(project, tmp_path, "append:kill", "run", "passes", "--env", "local").returncode == -signal.SIGKILL
    record = project.run_dirs()[0] / "record.json"
    record.write_text(record.read_text().replace('"passed"', '"failed"'))
    result = cli(project, "status")
    assert result.code == 0, result.output
    assert "is not the one its runner wrote: modified: record.json changed" in result.stderr
    assert ledger_lines(project) == [] and len(_markers(project)) == 1


def test_a_public_key_cut_short_by_a_full_disk_is_written_whole_later(tmp_path: Path) -> None:
    from drillbook.evidence import keys

    archive = tmp_path / "archive"
    (tmp_path / "home").mkdir()
    code = (f"from pathlib import Path\nfrom drillbook.evidence import keys\n"
            f"key = keys.load_or_create_signing_key(Path({str(tmp_path / 'home')!r}))\n")
    assert _with_file_size_limit(code, 1 << 20).returncode == 0  # create the key without a limit
    cut = _with_file_size_limit(code + f"keys.export_public_key(key, Path({str(archive)!r}))\n", 40)
    assert cut.returncode == 1 and "File too large" in cut.stderr, cut.stderr
    assert [p for p in (archive / "keys").iterdir()] == []  # nothing half-written
    key = keys.load_or_create_signing_key(tmp_path / "home")
    kid = keys.export_public_key(key, archive)  # space freed
    assert list(keys.load_public_keys(archive)) == [kid]


def test_a_marker_that_cannot_be_written_leaves_no_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from drillbook import journal
    from drillbook.config.secrets import Redactor
    from drillbook.evidence import keys
    from drillbook.runner import inflight

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal, "write_json_atomic", disk_full)
    plan = SimpleNamespace(run_id="20260101T000000Z-full-local-000000", redactor=Redactor())
    with pytest.raises(OSError):
        inflight.Marker.create(tmp_path / "state", plan, {}, tmp_path / "archive",  # type: ignore[arg-type]
                               keys.load_or_create_signing_key(), {})
    assert list(_run_root().iterdir()) == []
