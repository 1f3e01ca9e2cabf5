"""The fault library: real faults a drill injects, each with its own way back.

    from drillbook import faults
    from drillbook.faults import network, process, disk, resource, stops

``base`` (the ``Fault`` interface, ``inject``, ``Active``), one module per kind: ``process`` (kill,
freeze, restart), ``network`` (nftables partitions), ``disk`` (fill a filesystem), ``resource``
(stress-ng), and ``stops`` (stop conditions that heal the faults and stop the run).
"""
from __future__ import annotations

from .base import Active, Fault, FaultError, inject

__all__ = ["Active", "Fault", "FaultError", "inject"]
