"""The cells a person ran in an interactive run, kept as the notebook the evidence archives.

A kernel cannot read the notebook the person sees, so the run rebuilds it from what the kernel
did: each executed cell's source, execution count, start and end times and the outputs the kernel
sent (already scrubbed by ``kernel.py``), in execution order. The notebook is rewritten atomically
in the run's private folder at the start and end of every cell, so a kernel killed mid-cell still
leaves every cell up to the one it was running, marked running (``runner/outcome.mark_failure``
reads the same ``papermill`` cell metadata as for a papermill run).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from . import journal

NOTEBOOK_NAME = "output.ipynb"  # the name the runner's recovery reads in a run folder
OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error")
MAX_OUTPUTS = 500  # per cell: a loop printing forever must not fill the disk


class CellLog:
    """The executed cells of one run, written to ``<run_dir>/output.ipynb`` as they go."""

    def __init__(self, run_dir: Path, language_info: dict[str, Any] | None = None) -> None:
        self.path = run_dir / NOTEBOOK_NAME
        self._cells: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None
        self._lock = threading.Lock()  # outputs arrive on the kernel's I/O thread
        self._metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                          "language_info": language_info or {"name": "python"},
                          "drillbook": {"mode": "interactive"}}

    # ----------------------------------------------------------------- a cell
    def begin(self, source: str, execution_count: int | None) -> None:
        """A cell starts: journal it as running (a kernel killed now leaves it marked so)."""
        with self._lock:
            self._current = {
                "cell_type": "code", "execution_count": execution_count, "source": source, "outputs": [],
                "metadata": {"papermill": {"status": "running", "exception": False},
                             "drillbook": {"started_at": journal.now_iso()}},
            }
            self._cells.append(self._current)
        self.save()

    def output(self, msg_type: str, content: dict[str, Any]) -> None:
        """An output the kernel sent (scrubbed) while a cell runs; others are not the run's."""
        with self._lock:
            cell = self._current
            if cell is None:
                return
            if msg_type == "clear_output":
                cell["outputs"].clear()
                return
            item = _as_output(msg_type, content)
            if item is None or len(cell["outputs"]) >= MAX_OUTPUTS:
                return
            last = cell["outputs"][-1] if cell["outputs"] else None
            if item["output_type"] == "stream" and last and last.get("output_type") == "stream" \
                    and last.get("name") == item["name"]:
                last["text"] += item["text"]  # as Jupyter shows it: one block per stream
            else:
                cell["outputs"].append(item)

    def end(self, execution_count: int | None, failed: bool) -> None:
        """The running cell ended (``failed``: it raised or was interrupted)."""
        with self._lock:
            cell, self._current = self._current, None
            if cell is not None:
                if execution_count is not None:
                    cell["execution_count"] = execution_count
                cell["metadata"]["papermill"] = {"status": "failed" if failed else "completed", "exception": failed}
                cell["metadata"]["drillbook"]["ended_at"] = journal.now_iso()
        self.save()

    # ----------------------------------------------------------------- the notebook
    def notebook(self) -> dict[str, Any]:
        """The notebook as executed so far (a copy: the running cell keeps changing)."""
        import copy

        with self._lock:
            cells = copy.deepcopy(self._cells)
        return {"nbformat": 4, "nbformat_minor": 5, "metadata": dict(self._metadata),
                "cells": [{**c, "id": f"cell-{i}"} for i, c in enumerate(cells)]}

    def save(self) -> None:
        journal.write_json_atomic(self.path, self.notebook())


def _as_output(msg_type: str, content: dict[str, Any]) -> dict[str, Any] | None:
    """An nbformat output from a kernel message's content (None for anything else)."""
    if msg_type not in OUTPUT_TYPES or not isinstance(content, dict):
        return None
    if msg_type == "stream":
        return {"output_type": "stream", "name": str(content.get("name", "stdout")), "text": str(content.get("text", ""))}
    if msg_type == "error":
        return {"output_type": "error", "ename": str(content.get("ename", "")), "evalue": str(content.get("evalue", "")),
                "traceback": [str(line) for line in content.get("traceback") or []]}
    item: dict[str, Any] = {"output_type": msg_type, "data": dict(content.get("data") or {}),
                            "metadata": dict(content.get("metadata") or {})}
    if msg_type == "execute_result":
        item["execution_count"] = content.get("execution_count")
    return item
