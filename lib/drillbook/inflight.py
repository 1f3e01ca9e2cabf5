"""In-flight markers: how a runner killed mid-run (even by SIGKILL) still leaves evidence.

Before the kernel starts, the runner writes ``<state>/inflight/<run_id>.json``: its pid, the
private run folder and the record so far. A normal end removes it. Any later drillbook
command that finds a marker whose runner is gone stops the orphaned kernel and archives an
``aborted`` record with whatever the journal and the partial notebook hold.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from . import journal, keys, paths, record
from .errors import DrillbookError


def _proc_start(pid: int) -> str | None:
    """The process start time (clock ticks since boot): tells a live runner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int | None, started: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _proc_start(pid) in (None, started)


def marker_dir(state: Path) -> Path:
    return state / "inflight"


def write_marker(state: Path, plan: Any, base: dict[str, Any], run_dir: Path, archive: Path) -> Path:
    path = marker_dir(state) / f"{plan.run_id}.json"
    info = {"run_id": plan.run_id, "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
            "kernel_pid": None, "kernel_start": None, "run_dir": str(run_dir), "archive": str(archive),
            "t0": time.time(), "record": plan.redactor.scrub_obj(base)}
    journal.write_json_atomic(path, info)
    return path


def note_kernel(marker: Path, pid: int | None) -> None:
    """Remember the kernel's pid, so an orphaned kernel can be stopped after a runner crash."""
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    info.update(kernel_pid=pid, kernel_start=_proc_start(pid) if pid else None)
    journal.write_json_atomic(marker, info)


def remove_marker(marker: Path) -> None:
    marker.unlink(missing_ok=True)


def recover_aborted(project: Path | None = None) -> list[str]:
    """Turn markers of dead runners into ``aborted`` records. Returns the recovered run ids."""
    state = paths.state_dir(project)
    directory = marker_dir(state)
    if not directory.is_dir():
        return []
    recovered = []
    with open(state / ".recover.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two commands starting together must not archive twice
        for marker in sorted(directory.glob("*.json")):
            try:
                info = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if _alive(info.get("pid"), info.get("proc_start")):
                continue
            _recover_one(info, project)
            marker.unlink(missing_ok=True)
            recovered.append(info["run_id"])
    return recovered


def _stop_orphan_kernel(info: dict[str, Any]) -> None:
    pid = info.get("kernel_pid")
    if pid and _alive(pid, info.get("kernel_start")):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _recover_one(info: dict[str, Any], project: Path | None) -> None:
    import nbformat

    from . import environments, evidence, executor
    from .render import HtmlRenderer

    _stop_orphan_kernel(info)
    run_dir = Path(info["run_dir"])
    base = info["record"]
    reason = f"the runner (pid {info['pid']}) was killed before the run finished"
    done = record.complete_record(base, status="aborted", reason=reason, seconds=time.time() - info["t0"],
                                  kernel_journal=journal.read_journal(run_dir), failing_cell=None, results=None)
    notebook = html = attachments = None
    output = run_dir / "output.ipynb"
    try:  # the partial notebook is archived only if we can scrub it of every secret
        env = environments.load_environment(base["env"], project)
        redactor = executor.build_redactor(env, base.get("parameters", {}), paths.project_root(project))
        if output.exists():
            nb = nbformat.read(str(output), as_version=4)
            done["failing_cell"] = executor.mark_failure(nb, "aborted", reason)
            notebook = redactor.scrub_obj(nb)
            html = HtmlRenderer().render(nbformat.from_dict(notebook), executor.html_header(done))
        attachments = run_dir / "attachments"
    except (DrillbookError, OSError, ValueError) as exc:
        from .secrets import Redactor

        redactor = Redactor()
        done["reason"] = f"{reason}; partial notebook not archived ({exc})"
    evidence.record_run(Path(info["archive"]), keys.load_or_create_signing_key(), done, redactor,
                        notebook=notebook, html=html, attachments=attachments)
    shutil.rmtree(run_dir, ignore_errors=True)
