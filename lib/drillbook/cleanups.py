"""The cleanups a drill registers: run at its end whatever happened, last registered first.

A mutating cleanup obeys the guards of a mutating step (nothing runs under ``dry_run``, nothing
changes production without a change reference) and is reported, never run, when they forbid it;
a failing cleanup never stops the others. The drill passes in how to judge, say and record.
"""
from __future__ import annotations

from typing import Callable

from . import journal
from .evidence.record import Cleanup, CleanupOutcome

Refusal = Callable[[str], str | None]  # why a mutating ``what`` may not run, or None
Say = Callable[[str], None]


class Cleanups:
    """The cleanups of one run, pending until :meth:`run`."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, Callable[[], object], bool]] = []

    def add(self, title: str, fn: Callable[[], object], mutating: bool) -> None:
        self._pending.append((title, fn, mutating))

    def run(self, *, dry_run: bool, refusal: Refusal, say: Say, record: Callable[[Cleanup], None]) -> None:
        """Run every pending cleanup, last registered first, handing each one's entry to ``record``."""
        while self._pending:
            title, fn, mutating = self._pending.pop()
            started = journal.now_iso()
            outcome = _run_one(title, fn, mutating, dry_run, refusal, say)
            record({"title": title, "started_at": started, **outcome, "ended_at": journal.now_iso()})


def _run_one(title: str, fn: Callable[[], object], mutating: bool, dry_run: bool, refusal: Refusal,
             say: Say) -> CleanupOutcome:
    """Run one cleanup unless the guards of a mutating step forbid it; its status and detail."""
    refused = refusal(f"cleanup {title!r}") if mutating else None
    if mutating and dry_run:
        say(f"○ cleanup {title} — DRY RUN, not run")
        return {"status": "dry-run"}
    if refused:  # a mutating cleanup obeys the same guard as a mutating step: reported, never run
        say(f"✗ cleanup {title} not run: {refused}")
        return {"status": "refused", "detail": refused}
    try:
        fn()
    except BaseException as exc:  # a failing cleanup must not stop the others
        say(f"✗ cleanup {title} failed: {type(exc).__name__}: {exc}")
        return {"status": "failed", "detail": f"{type(exc).__name__}: {exc}"}
    say(f"✓ cleanup {title}")
    return {"status": "passed"}
