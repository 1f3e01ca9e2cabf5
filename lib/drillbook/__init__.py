"""drillbook: executable runbooks, recovery drills and signed evidence, kept as Jupyter notebooks.

Inside a notebook::

    import drillbook
    drill = drillbook.start(env=env, dry_run=dry_run, approve=approve, run_id=run_id, change=change)
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import DrillbookError

if TYPE_CHECKING:
    from . import ui
    from .drill import Drill, current, start

__all__ = ["Drill", "DrillbookError", "current", "start", "ui"]
__version__ = "0.1.0"

# The notebook API is loaded on first use (PEP 562): every `drillbook` command imports this
# package, and the drill API brings pydantic, the shells and the kernel hooks, which
# `drillbook --help`, `lint` or `run` (whose parent process never calls the API) do not need.
_LAZY = {"Drill": ".drill", "current": ".drill", "start": ".drill", "ui": ".ui"}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = import_module(_LAZY[name], __name__)
    value = module if name == "ui" else getattr(module, name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
