"""drillbook: executable runbooks, recovery drills and signed evidence, kept as Jupyter notebooks.

Inside a notebook::

    import drillbook
    drill = drillbook.start(env=env, dry_run=dry_run, approve=approve, run_id=run_id, change=change)
"""
from . import ui
from .drill import Drill, current, start
from .errors import DrillbookError

__all__ = ["Drill", "DrillbookError", "current", "start", "ui"]
__version__ = "0.1.0"
