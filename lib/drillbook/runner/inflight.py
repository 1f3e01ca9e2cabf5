"""In-flight markers: how a runner killed mid-run (even by SIGKILL) still leaves evidence.

Each run works in a private folder of its own under the run root (``paths.run_root()``, 0700,
owned by the user who runs drillbook): the unscrubbed notebook, the journal and the kernel's
sockets live there and nowhere else. Before the kernel starts, the runner writes
``<state>/inflight/<run_id>.json``, signed with the signing key: its pid, the run folder and the
record so far; then the kernel's pid, the finished record and the bundle's MANIFEST hash, as
the run goes. A normal end removes the run folder, then the marker.

Any later drillbook command that finds a marker whose runner is gone resumes where it stopped:

* the bundle is in place (stopped after the rename): it is entered in the ledger with the
  status its own record.json holds, unless the ledger has it already; HEAD is brought up to date;
* the run had finished but its bundle was not written (stopped, or a full disk): the finished
  record is archived, with its true status;
* otherwise the orphaned kernel is stopped and an ``aborted`` record is archived with whatever
  the journal and the partial notebook hold.

It acts only on what a runner of this user created. A marker whose signature does not check, or
that names a folder which is not a private direct child of the run root, is reported and left
alone; only processes whose environment names the run folder are signalled (the kernel, and its
process group once its pid and start time match the marker).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import files, journal, paths
from ..config import environments
from ..config.secrets import Redactor
from ..errors import DrillbookError, EvidenceError
from ..evidence import keys, ledger, record, remote, rotation
from ..evidence.archive import finish_archived, load_record
from ..evidence.archive import run_dir as bundle_dir
from ..evidence.store import S3Archive, parse_location
from ..journal import RUN_DIR_VAR
from .outcome import html_header, keep_kernel_output, mark_failure
from .render import HtmlRenderer
from .supervise import KERNEL_LOG

if TYPE_CHECKING:
    from .plan import Plan

SIGNED_AS = b"drillbook in-flight marker v1\n"  # a marker signature can never pass for a ledger one
STOP_WAIT = 10.0  # how long recovery waits for a killed kernel to be gone (SIGKILL is not instant)


class InflightError(DrillbookError):
    """The run root is not private: refuse to put a run's unscrubbed data there."""


# --------------------------------------------------------------------------- processes
def _proc_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [0] is the state, [19] the start time."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _proc_start(pid: int) -> str | None:
    """The process start time (clock ticks since boot): tells a live process from a reused pid."""
    fields = _proc_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _alive(pid: int | None, started: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_fields(pid)
    if fields and fields[0] in ("Z", "X"):  # a killed kernel its parent has not reaped yet runs nothing
        return False
    return started is None or _proc_start(pid) in (None, started)


def _gone(pid: int, started: str) -> bool:
    """Dead for good: no such process, another process under a reused pid, or a zombie (a
    killed kernel whose runner died stays one until init reaps it: it runs nothing)."""
    fields = _proc_fields(pid)
    return fields is None or fields[19] != started or fields[0] in ("Z", "X")


def _run_processes(run_dir: Path) -> dict[int, str]:
    """Live processes (pid → start time) whose environment names the run folder: its kernel,
    the kernel's children and child notebooks' kernels. The run folder is private and random,
    so no unrelated process carries it."""
    wanted = f"{RUN_DIR_VAR}={run_dir}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        start = _proc_start(int(entry.name))
        if start and any(v == wanted or v.startswith(wanted + b"/") for v in environ):
            found[int(entry.name)] = start
    return found


def _stop_run_processes(info: dict[str, Any], run_dir: Path) -> None:
    """SIGKILL what the dead runner's kernel left running, and wait (bounded) until it is gone,
    so nothing writes into the run folder while it is archived and removed."""
    targets = _run_processes(run_dir)
    kernel = info.get("kernel_pid")
    if kernel in targets and targets[kernel] == info.get("kernel_start") and _leads_group(kernel):
        # The kernel leads its own session: its group holds what it started.
        files.kill(kernel, signal.SIGKILL, group=True)
    for pid in targets:
        files.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_WAIT
    while not all(_gone(pid, start) for pid, start in targets.items()) and time.monotonic() < deadline:
        time.sleep(0.05)


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except (ProcessLookupError, PermissionError):
        return False


# --------------------------------------------------------------------------- run folders
def _private_problem(path: Path) -> str | None:
    """Why ``path`` is not a private folder of ours (None if it is one)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder (a symbolic link?)"
    if info.st_uid != os.geteuid():
        return f"belongs to uid {info.st_uid}"
    if info.st_mode & 0o077:
        return f"is open to others (mode {info.st_mode & 0o777:o})"
    return None


def new_run_dir() -> Path:
    """A fresh private folder for one run, under the run root (created 0700 if need be)."""
    root = paths.run_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    problem = _private_problem(root)
    if problem:
        raise InflightError(f"the run folder root {root} {problem}",
                            f"it holds unscrubbed notebooks: make it a folder of yours, then chmod 700 {root}")
    return Path(tempfile.mkdtemp(prefix="run-", dir=root))


def _run_dir_problem(run_dir: Path) -> str | None:
    """Why recovery must not touch ``run_dir`` (None if it is a run folder a runner of ours made)."""
    root = paths.run_root()
    if run_dir.parent != root or run_dir.name in ("", ".", ".."):
        return f"is not a folder directly under the run root {root}"
    problem = _private_problem(root)
    if problem:
        return f"is under {root}, which {problem}"
    if not os.path.lexists(run_dir):
        return None  # already removed: nothing to read or remove
    return _private_problem(run_dir)


# --------------------------------------------------------------------------- markers
def marker_dir(state: Path) -> Path:
    return paths.inflight_dir(state)


def _signature(key: Ed25519PrivateKey, info: dict[str, Any]) -> str:
    return keys.sign(key, SIGNED_AS + ledger.canonical({k: v for k, v in info.items() if k != "sig"}))


def _authentic(key: Ed25519PrivateKey, info: dict[str, Any]) -> bool:
    """Signed by this user's key, or by one it retired (a runner that started before a rotation)."""
    body = ledger.canonical({k: v for k, v in info.items() if k != "sig"})
    return any(keys.verify_signature(public, SIGNED_AS + body, str(info.get("sig")))
               for public in (key.public_key(), *rotation.retired_public_keys()))


class Marker:
    """One run's marker, kept in memory by its runner and rewritten (signed) at each change."""

    def __init__(self, path: Path, info: dict[str, Any], key: Ed25519PrivateKey,
                 redactor: Redactor | None = None) -> None:
        self.path, self.info, self.key, self.redactor = path, info, key, redactor

    @classmethod
    def create(cls, state: Path, plan: Plan, base: dict[str, Any], archive: Path | S3Archive,
               key: Ed25519PrivateKey, scrub_parameters: dict[str, Any]) -> Marker:
        """A new private run folder and its marker (or neither).

        ``scrub_parameters``: the parameters with the notebook's defaults, whose secret
        references the redactor resolved (recovery must scrub exactly those)."""
        return cls.open(state, plan.run_id, plan.redactor, base, archive, key, scrub_parameters)

    @classmethod
    def open(cls, state: Path, run_id: str, redactor: Redactor, base: dict[str, Any], archive: Path,
             key: Ed25519PrivateKey, scrub_parameters: dict[str, Any]) -> Marker:
        """``create`` for a run without a plan: an interactive run, whose process is its kernel."""
        run_dir = new_run_dir()
        info = {"run_id": run_id, "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
                "kernel_pid": None, "kernel_start": None, "run_dir": str(run_dir), "archive": str(archive),
                "t0": time.time(), "record": redactor.scrub_obj(base),
                "scrub_parameters": redactor.scrub_obj(scrub_parameters),
                "outcome": None, "manifest_sha256": None}
        marker = cls(marker_dir(state) / f"{run_id}.json", info, key, redactor)
        try:
            marker._save()
        except BaseException:  # e.g. a full disk: no folder that no marker names is left behind
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return marker

    @property
    def run_dir(self) -> Path:
        return Path(self.info["run_dir"])

    def _save(self) -> None:
        # Round-trip through JSON first: the signature covers exactly what a reader will load.
        self.info = json.loads(json.dumps({k: v for k, v in self.info.items() if k != "sig"}, default=str))
        self.info["sig"] = _signature(self.key, self.info)
        journal.write_json_atomic(self.path, self.info)

    def note_kernel(self, pid: int | None) -> None:
        """Remember the kernel's pid, so an orphaned kernel can be stopped after a runner crash."""
        self.info.update(kernel_pid=pid, kernel_start=_proc_start(pid) if pid else None)
        self._save()

    def note_outcome(self, done: dict[str, Any]) -> None:
        """The finished record, before archiving: if the bundle is never written (a kill, a full
        disk) the next command archives this status, not "aborted"."""
        self.info["outcome"] = self.redactor.scrub_obj(done) if self.redactor else done
        self._save()

    def note_manifest(self, sha: str) -> None:
        """The bundle's MANIFEST hash, just before the bundle is renamed into place."""
        self.info["manifest_sha256"] = sha
        self._save()

    def finish(self) -> None:
        """The run is archived: remove its folder (the unscrubbed data), then the marker."""
        shutil.rmtree(self.info["run_dir"], ignore_errors=True)
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- recovery
@dataclass
class Recovery:
    recovered: dict[str, str] = field(default_factory=dict)  # run id → the status archived now
    problems: list[str] = field(default_factory=list)  # markers left alone, and why


def recover_aborted(project: Path | None = None) -> Recovery:
    """Finish the runs of dead runners (see the module docstring). Never raises for one marker:
    a marker it cannot act on is reported, and left for the operator or the next command."""
    state = paths.state_dir(project)
    directory = marker_dir(state)
    report = Recovery()
    if not directory.is_dir() or not any(directory.glob("*.json")):
        return report
    with files.flocked(state / ".recover.lock"):  # two commands starting together must not archive twice
        try:
            key = keys.load_or_create_signing_key()
        except DrillbookError as exc:
            report.problems.append(f"in-flight runs cannot be checked: {exc.message}")
            return report
        for path in sorted(directory.glob("*.json")):
            try:
                _recover_marker(path, key, project, report)
            except (DrillbookError, OSError) as exc:
                what = exc.message if isinstance(exc, DrillbookError) else str(exc)
                report.problems.append(f"run {path.stem} could not be archived yet ({what}); "
                                       "the next drillbook command tries again")
    return report


def _recover_marker(path: Path, key: Ed25519PrivateKey, project: Path | None, report: Recovery) -> None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return  # another command finished it meanwhile
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or info.get("run_id") != path.stem or not _authentic(key, info):
        report.problems.append(f"in-flight marker {path} is not signed by this user's drillbook key: "
                               "left alone (look at it, then delete it)")
        return
    if _alive(info.get("pid"), info.get("proc_start")):
        return
    run_dir = Path(info["run_dir"])
    problem = _run_dir_problem(run_dir)
    if problem:
        report.problems.append(f"in-flight marker {path} names {run_dir}, which {problem}: left alone")
        return
    _stop_run_processes(info, run_dir)
    marker = Marker(path, info, key)
    status = _recover_one(marker, project)
    marker.finish()
    report.recovered[info["run_id"]] = status


def _recover_one(marker: Marker, project: Path | None) -> str:
    """Archive the run from where its runner stopped; return the status archived."""
    info = marker.info
    archive, run_id = parse_location(info["archive"]), info["run_id"]
    staging = Path(info["run_dir"]) / remote.STAGING
    if isinstance(archive, S3Archive):
        status = remote.resume(archive, marker.key, staging, run_id, info.get("manifest_sha256"))
        if status is not None:  # the bundle was built: uploaded (again) and entered once
            return status
    elif os.path.lexists(bundle_dir(archive, run_id)):  # stopped after the rename
        if not info.get("manifest_sha256"):
            raise EvidenceError(f"bundle {bundle_dir(archive, run_id)} was not written by this run's runner",
                                "run drillbook verify, then look at the bundle")
        finish_archived(archive, marker.key, run_id, info["manifest_sha256"])
        return str(load_record(archive, run_id).get("status"))
    done, redactor, notebook, html, attachments = _record_to_archive(info, project)
    remote.archive_run(archive, marker.key, done, redactor, staging, notebook=notebook, html=html,
                       attachments=attachments, on_manifest=marker.note_manifest)
    return str(done["status"])


def _record_to_archive(info: dict[str, Any], project: Path | None) -> tuple[
        dict[str, Any], Redactor, dict[str, Any] | None, str | None, Path | None]:
    """The record (the finished one if the runner got that far, else ``aborted``), the redactor,
    and the partial notebook and attachments, scrubbed as the runner would have scrubbed them."""
    import nbformat  # slow to import: only the recovery of a dead run needs it

    from . import plan  # imports nbformat (slow) at its top: only the recovery of a dead run needs it

    run_dir = Path(info["run_dir"])
    base = info["record"]
    done = info.get("outcome")
    if done is None:
        who = "kernel" if base.get("mode") == "interactive" else "runner"  # an interactive run has no runner
        reason = f"the {who} (pid {info['pid']}) was killed before the run finished"
        done = record.complete_record(base, status="aborted", reason=reason, seconds=time.time() - info["t0"],
                                      kernel_journal=journal.read_journal(run_dir), failing_cell=None,
                                      results=None)
    notebook = html = None
    output = run_dir / "output.ipynb"
    try:  # the partial notebook is archived only if we can scrub it of every secret
        root = paths.project_root(project)
        env = environments.load_environment(base["env"], project)
        redactor = plan.build_redactor(env, info.get("scrub_parameters") or base.get("parameters", {}), root)
        plan.refresh_redactor(redactor, env, base.get("parameters", {}), root, run_dir / "attachments",
                                  journal.read_journal(run_dir))  # secrets a cell resolved itself
        keep_kernel_output(run_dir, redactor, run_dir / "attachments" / KERNEL_LOG)
        if output.exists():
            nb = nbformat.read(str(output), as_version=4)
            failing = mark_failure(nb, done["status"], done["reason"],
                                            (done.get("failing_cell") or {}).get("index"))
            if info.get("outcome") is None:
                done["failing_cell"] = failing
            notebook = redactor.scrub_obj(nb)
            html = HtmlRenderer().render(nbformat.from_dict(notebook), html_header(done))
        return done, redactor, notebook, html, run_dir / "attachments"
    except (DrillbookError, OSError, ValueError) as exc:
        done["reason"] = f"{done['reason'] or done['status']}; partial notebook not archived ({exc})"
        return done, Redactor(), None, None, None
