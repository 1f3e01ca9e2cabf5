"""What a run's ending means, and how its evidence shows it.

    classify          the status and reason, from what the runner saw and the kernel journalled
    mark_failure      the failing cell tagged and a banner on top of the executed notebook
    html_header       what the run's HTML page shows above the notebook
    keep_kernel_output  the kernel's own stdout/stderr, scrubbed, as an attachment

Used by the runner at the end of a run and by recovery for a run whose runner died.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import journal
from ..config.secrets import Redactor
from ..evidence.record import verdict
from .supervise import FROZEN, KERNEL_LOG

if TYPE_CHECKING:
    from nbformat import NotebookNode


def classify(exc: BaseException | None, supervisor_reason: str | None, kernel_journal: dict[str, Any] | None,
             timeout: float) -> tuple[str, str | None]:
    """The run's status and reason from what the runner saw and what the kernel journalled."""
    if supervisor_reason == "aborted":
        return "aborted", "interrupted by the operator or a signal"
    if supervisor_reason is not None and supervisor_reason.startswith(FROZEN):
        return "aborted", f"interrupted because {supervisor_reason[len(FROZEN):]}"
    if supervisor_reason == "timeout":
        return "error", f"execution timeout: the notebook ran longer than {timeout:g} s"
    status = (kernel_journal or {}).get("status")
    if status in journal.STATUSES:
        return status, kernel_journal.get("reason")  # type: ignore[union-attr]
    if exc is not None:
        if type(exc).__name__ == "DeadKernelError":
            return "error", "the kernel died during execution"
        ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
        if ename:
            return "error", f"{ename}: {evalue}"
        return "error", f"{type(exc).__name__}: {exc}"
    if kernel_journal:  # drill API used but finish() never called: judge what was recorded
        return judge(kernel_journal)
    return "passed", None


def judge(kernel_journal: dict[str, Any]) -> tuple[str, str | None]:
    """The verdict (the one in evidence.record) on what a kernel journalled without closing its run."""
    return verdict(kernel_journal.get("checks", []), kernel_journal.get("measures", []),
                   kernel_journal.get("cleanups", []))


def mark_failure(nb: NotebookNode, status: str, reason: str | None,
                 failed_index: int | None = None) -> dict[str, Any] | None:
    """Tag the failing cell and put a banner on top, as papermill does for a raised exception.

    The failing cell is the one papermill marked, else the one the engine saw fail (a dead
    kernel), else one still marked running (a killed runner).
    """
    if status == "passed":
        return None
    import nbformat  # slow to import: every command loads this module (recovery), few mark a notebook

    failing = None
    for index, cell in enumerate(nb.cells):
        pm = cell.get("metadata", {}).get("papermill", {})
        if cell.cell_type == "code" and (pm.get("exception") or pm.get("status") == "running"):
            failing = (index, cell)
            break
    if failing is None and failed_index is not None and failed_index < len(nb.cells):
        failing = (failed_index, nb.cells[failed_index])
    info = None
    if failing is not None:
        index, cell = failing
        tags = cell.metadata.setdefault("tags", [])
        if "drillbook-failed-cell" not in tags:
            tags.append("drillbook-failed-cell")
        info = {"index": index, "execution_count": cell.get("execution_count"),
                "source_first_line": (cell.source.splitlines() or [""])[0][:200]}
    where = f" Failing cell: In [{info['execution_count']}] (cell {info['index']})." if info else ""
    banner = nbformat.v4.new_markdown_cell(
        f'<span style="color:red">**drillbook: this run ended `{status}`** — {reason or "no reason recorded"}.{where}</span>'
    )
    banner.metadata["tags"] = ["drillbook-status"]
    nb.cells.insert(0, banner)
    return info


def keep_kernel_output(run_dir: Path, redactor: Redactor, target: Path) -> None:
    """Archive what the kernel wrote to its stdout/stderr (``KERNEL_LOG`` in the run folder) as
    an attachment, scrubbed, if it wrote anything. Never printed: it was never scrubbed before."""
    try:
        data = (run_dir / KERNEL_LOG).read_bytes()
    except OSError:
        return
    if data.strip():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Decoded with replacement so the scrubber sees text: raw bytes would be archived unscrubbed.
        target.write_text(redactor.scrub(data.decode("utf-8", "replace")), encoding="utf-8")


def html_header(rec: dict[str, Any]) -> dict[str, Any]:
    """What the run-time HTML page shows above the notebook."""
    return {"title": rec["title"], "status": rec["status"], "reason": rec["reason"], "run": rec["run_id"],
            "environment": rec["env"], "started": rec["started_at"], "finished": rec["finished_at"],
            "mode": rec.get("mode", "run"), "operator": _operator(rec), "dry run": rec["dry_run"], "change": rec["change"],
            "severity": rec.get("severity"), "incident": rec.get("incident"),
            "source sha256": rec["source"]["sha256"], "git commit": rec["source"]["git_commit"]}


def _operator(rec: dict[str, Any]) -> str:
    """The operator, and where the name came from (records before ``operator_source`` lack it)."""
    source = rec.get("operator_source")
    return f"{rec['operator']} (from {source})" if source else str(rec["operator"])
