"""The ``drillbook`` command: one module per verb (or verb group), one thin function per verb.

The work happens in the packages below; a verb parses, calls, prints. A new verb goes in a module
of its own here that registers on ``app.app`` and is imported below.

Exit codes: 0 passed/ok, 1 a run did not pass (or verify/lint found problems), 2 bad input.
Errors print one line and a hint, never a traceback.
"""
from __future__ import annotations

import sys

from ..errors import DrillbookError
from .app import app, print_error

# Each module registers its verbs on the app; --help lists them in this order.
from . import catalog, run, evidence, publish, lab, incident, keys, anchor, approve  # noqa: E402, F401, I001

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: click handles usage errors (exit 2) and --help; we handle DrillbookError."""
    try:
        app(args=argv, standalone_mode=True)
    except DrillbookError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
