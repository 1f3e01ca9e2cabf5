"""ipywidgets for operators running a runbook in JupyterLab: pick the environment, approve gates.

Both degrade to nothing under ``drillbook run`` (unattended): the environment comes from the
``env`` parameter and gates from ``--approve``. Widget callbacks run between cells, so the
pattern is two cells: one shows the widget, the next reads it.

The environment is chosen once: while a run is open in the kernel the picker shows that run's
environment and returns it; otherwise it starts at the environment last picked in this kernel
(Run All re-runs the picker cell: it must not fall back to the default), or at the working
copy's ``incident.json``.

    picker = drillbook.ui.environment_picker(env)        # cell 1: choose
    drill = drillbook.start(env=picker.value, ...)       # cell 2: start against the choice
    drillbook.ui.gate_panel(drill, ["promote"])          # type the gate's name, press Approve
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import incidentfile, journal
from .config import environments
from .drill import Drill, current
from .journal import RUN_DIR_VAR

_picked: str | None = None  # the environment last picked in this kernel


def unattended() -> bool:
    return bool(os.environ.get(RUN_DIR_VAR))


@dataclass
class FixedChoice:
    """What ``environment_picker`` returns under the runner: the parameter, unchanged."""

    value: str


def environment_picker(default: str = "local") -> Any:
    """A dropdown of the project's environments (production ones marked). Read ``.value``."""
    if unattended():
        return FixedChoice(default)
    import ipywidgets as widgets
    from IPython.display import display

    run = current()
    if run is not None and run.interactive is not None and run.data["finished_at"] is None:
        display(widgets.HTML(f"<b>Environment: {run.env.name}</b>{' — PRODUCTION' if run.env.production else ''} "
                             f"(run {run.run_id} is open: call drill.finish() to change it)"))
        return FixedChoice(run.env.name)
    options = []
    for name in environments.environment_names():
        env = environments.load_environment(name)
        options.append((f"{name} — PRODUCTION" if env.production else name, name))
    found = incidentfile.load_incident_file(Path.cwd())
    start = (found.env if found and found.env else None) or _picked or default
    picker = widgets.Dropdown(options=options, value=start if start in dict(options).values() else None,
                              description="Environment", style={"description_width": "initial"})
    picker.observe(_remember, names="value")
    _remember({"new": picker.value})
    display(picker)
    return picker


def _remember(change: dict[str, Any]) -> None:
    global _picked
    if change.get("new"):
        _picked = str(change["new"])


def gate_panel(drill: Drill, gates: list[str]) -> Any:
    """For each gate: a text box where the operator types the gate's name, and an Approve button.

    Approving records who approved and when in the run's journal; the gated step then runs
    without asking again. Under the runner nothing is shown: gates come from ``--approve``.
    """
    if drill.unattended:
        return None
    import ipywidgets as widgets
    from IPython.display import display

    rows = [_gate_row(drill, gate, widgets) for gate in gates]
    panel = widgets.VBox(rows)
    display(panel)
    return panel


def _gate_row(drill: Drill, gate: str, widgets: Any) -> Any:
    typed = widgets.Text(placeholder=f"type {gate} to approve", description=gate,
                         style={"description_width": "initial"})
    button = widgets.Button(description="Approve", button_style="danger", icon="check")
    state = widgets.Label("approved" if gate in drill.approved else "not approved")

    def approve(_: Any) -> None:
        if typed.value.strip() != gate:
            state.value = f"type exactly {gate}"
            return
        drill.approve_gate(gate, f"approved in the gate panel by {drill.data['operator']}")
        state.value = f"approved at {journal.now_iso()}"
        button.disabled = typed.disabled = True

    button.on_click(approve)
    return widgets.HBox([typed, button, state])
