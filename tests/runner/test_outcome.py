"""runner.outcome: a run's status and reason (classify) and how its notebook shows a failure (unit)."""
from __future__ import annotations

from typing import Any

import nbformat
import pytest
from drillbook.runner.outcome import classify, html_header, mark_failure


class DeadKernelError(Exception):
    """Named like nbclient's: classify recognises it by name, without importing nbclient."""


class CellError(Exception):
    def __init__(self, ename: str, evalue: str) -> None:
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue = ename, evalue


JOURNAL_FAILED = {"status": "failed", "reason": "objective missed: rto_seconds"}


@pytest.mark.parametrize("exc, supervisor, kernel_journal, expected", [
    (None, "aborted", JOURNAL_FAILED, ("aborted", "interrupted by the operator or a signal")),
    (CellError("KeyboardInterrupt", ""), "timeout", JOURNAL_FAILED,
     ("error", "execution timeout: the notebook ran longer than 2.5 s")),
    (CellError("RuntimeError", "boom"), None, JOURNAL_FAILED, ("failed", "objective missed: rto_seconds")),
    (DeadKernelError("gone"), None, None, ("error", "the kernel died during execution")),
    (CellError("ValueError", "bad"), None, {"status": "running"}, ("error", "ValueError: bad")),
    (OSError("disk"), None, None, ("error", "OSError: disk")),
    (None, None, {"checks": [{"name": "a", "passed": True}, {"name": "b", "passed": False},
                             {"name": "c", "passed": False}]}, ("failed", "check failed: b, c")),
    (None, None, {"checks": [{"name": "a", "passed": True}]}, ("passed", None)),
    # never closed: judged by the one verdict, so a missed objective or a failed cleanup counts too
    (None, None, {"status": "running", "measures": [{"name": "rto_seconds", "verdict": "missed"}]},
     ("failed", "objective missed: rto_seconds")),
    (None, None, {"status": "running", "cleanups": [{"title": "failback", "status": "failed"}]},
     ("error", "cleanup failed: failback")),
    (None, None, None, ("passed", None)),
])
def test_classify(exc: BaseException | None, supervisor: str | None, kernel_journal: dict[str, Any] | None,
                  expected: tuple[str, str | None]) -> None:
    assert classify(exc, supervisor, kernel_journal, 2.5) == expected


def notebook(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=list(cells))


def code(source: str, count: int | None = None, **papermill: Any) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source, execution_count=count)
    cell.metadata["papermill"] = papermill
    return cell


def test_a_passed_run_is_left_unmarked() -> None:
    nb = notebook(code("x = 1", 1, exception=False))
    assert mark_failure(nb, "passed", None) is None
    assert len(nb.cells) == 1 and "tags" not in nb.cells[0].metadata


def test_the_cell_papermill_marked_is_tagged_and_a_banner_names_it() -> None:
    nb = notebook(nbformat.v4.new_markdown_cell("# Title"), code("a = 1", 1),
                  code("raise ValueError('bad')\nmore", 2, exception=True), code("b = 2"))
    info = mark_failure(nb, "error", "ValueError: bad", failed_index=3)
    assert info == {"index": 2, "execution_count": 2, "source_first_line": "raise ValueError('bad')"}
    assert nb.cells[3].metadata["tags"] == ["drillbook-failed-cell"]  # shifted by the banner
    banner = nb.cells[0]
    assert banner.cell_type == "markdown" and banner.metadata["tags"] == ["drillbook-status"]
    assert "ended `error`" in banner.source and "ValueError: bad" in banner.source
    assert "In [2] (cell 2)" in banner.source


def test_without_a_papermill_mark_the_cell_the_engine_saw_fail_is_tagged() -> None:
    nb = notebook(code("a = 1", 1), code("os._exit(1)", 2))
    info = mark_failure(nb, "error", "the kernel died during execution", failed_index=1)
    assert info is not None and info["index"] == 1
    assert nb.cells[2].metadata["tags"] == ["drillbook-failed-cell"]


def test_a_cell_still_running_when_the_runner_died_is_the_failing_one() -> None:
    nb = notebook(code("a = 1", 1, status="completed"), code("time.sleep(60)", 2, status="running"))
    info = mark_failure(nb, "aborted", None)
    assert info is not None and info["index"] == 1
    assert "no reason recorded" in nb.cells[0].source


def test_no_failing_cell_still_gets_a_banner_and_tags_are_not_doubled() -> None:
    nb = notebook(code("a = 1", 1))
    assert mark_failure(nb, "failed", "check failed: b") is None
    assert "Failing cell" not in nb.cells[0].source and "check failed: b" in nb.cells[0].source
    nb = notebook(code("x", 1, exception=True))
    nb.cells[0].metadata["tags"] = ["drillbook-failed-cell"]
    mark_failure(nb, "error", "x")
    assert nb.cells[1].metadata["tags"] == ["drillbook-failed-cell"]


def test_an_out_of_range_failed_index_is_ignored() -> None:
    nb = notebook(code("a = 1", 1))
    assert mark_failure(nb, "error", "boom", failed_index=5) is None


def test_html_header_shows_the_run() -> None:
    rec = {"title": "T", "status": "failed", "reason": "r", "run_id": "id", "env": "local",
           "started_at": "s", "finished_at": "f", "operator": "o@h", "dry_run": True, "change": None,
           "source": {"sha256": "abc", "git_commit": "def"}}
    header = html_header(rec)
    assert header["run"] == "id" and header["environment"] == "local"
    assert header["source sha256"] == "abc" and header["git commit"] == "def" and header["dry run"] is True
