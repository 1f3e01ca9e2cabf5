"""Incidents: the operator's own copy of a runbook, so the source in ``runbooks/`` never changes by being run.

* ``workcopy``  ``drillbook incident open``: a per-incident folder under ``incidents/`` (git-ignored)
  with the runbook set for one environment and ``incident.json`` beside it, which
  ``drillbook.start()`` reads for the severity and the incident id;
* ``presave``   the Jupyter pre-save hook: a notebook saved under ``runbooks/`` or ``notebooks/``
  loses its outputs and keeps the parameters cell it has on disk (autosave included);
* ``servers``   the JupyterLab URL an operator opens (never its token).
"""
from __future__ import annotations

from .workcopy import INCIDENTS_DIR, SEVERITIES, IncidentCopy, open_incident

__all__ = ["INCIDENTS_DIR", "SEVERITIES", "IncidentCopy", "open_incident"]
