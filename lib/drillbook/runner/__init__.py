"""The runner: one execution of a notebook against an environment, always leaving evidence.

    plan       validate a request before anything runs (bad input → exit 2, nothing written)
    execute    lock the environment, run the notebook under a supervisor, archive whatever happened
    child      a catalogued notebook run from inside a drill's kernel, through the same pieces

Nothing is imported here: every drillbook command looks for in-flight runs (``inflight``), and
that must not pay for the execution modules.
"""
from __future__ import annotations

__all__ = ["child", "execute", "inflight", "locks", "plan", "progress", "render"]
