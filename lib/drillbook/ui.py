"""ipywidgets for operators running a runbook in JupyterLab: pick the environment, approve gates.

Both degrade to nothing under ``drillbook run`` (unattended): the environment comes from the
``env`` parameter and gates from ``--approve``. Widget callbacks run between cells, so the
pattern is two cells: one shows the widget, the next reads it.

    picker = drillbook.ui.environment_picker(env)        # cell 1: choose
    drill = drillbook.start(env=picker.value, ...)       # cell 2: start against the choice
    drillbook.ui.gate_panel(drill, ["promote"])          # type the gate's name, press Approve
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from . import journal
from .config import environments
from .drill import Drill
from .journal import RUN_DIR_VAR


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

    options = []
    for name in environments.environment_names():
        env = environments.load_environment(name)
        options.append((f"{name} — PRODUCTION" if env.production else name, name))
    picker = widgets.Dropdown(options=options, value=default if default in dict(options).values() else None,
                              description="Environment", style={"description_width": "initial"})
    display(picker)
    return picker


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
