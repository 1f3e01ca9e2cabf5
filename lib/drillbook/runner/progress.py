"""Progress of a run on the operator's terminal: which cell is executing, and for how long.

Only cell numbers and the cell's first comment or line are shown, never outputs (which could
hold secrets before scrubbing). On a terminal the line updates in place; in logs (cron, CI)
each cell gets one line when it completes.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def cell_title(cell: Any) -> str:
    lines = [line.strip() for line in (cell.get("source") or "").splitlines() if line.strip()]
    if not lines:
        return cell.get("cell_type", "cell")
    first = lines[0].lstrip("#").strip() if lines[0].startswith("#") else lines[0]
    return first[:60]


class CellProgress:
    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.cell_t0 = self.t0

    def __call__(self, event: str, index: int, total: int, cell: Any) -> None:
        if cell.get("cell_type") != "code":
            return
        now = time.monotonic()
        if event == "start":
            self.cell_t0 = now
            if self.tty:
                self._write(f"\r\033[K{self.label} [{index + 1}/{total}] {cell_title(cell)} …")
        else:
            mark = "✗" if event == "failed" else "✓"
            line = f"{self.label} [{index + 1}/{total}] {mark} {cell_title(cell)} ({now - self.cell_t0:.1f} s)"
            self._write(f"\r\033[K{line}\n" if self.tty else f"{line}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
