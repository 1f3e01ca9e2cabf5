"""ipywidgets for operators running a runbook in JupyterLab: pick the environment, approve gates.

Both degrade to nothing under ``drillbook run`` (unattended): the environment comes from the
``env`` parameter and gates from ``--approve``. Widget callbacks run between cells, so the
pattern is two cells: one shows the widget, the next reads it.

    picker = drillbook.ui.environment_picker(env, dry_run=dry_run, change=change)   # cell 1: choose
    drill = drillbook.start(env=picker.value, ..., change=picker.change)           # cell 2: start
    drillbook.ui.gate_panel(drill, ["promote"])          # type the gate's word, press Approve

The picker remembers the operator's choice in this kernel: Run All, or running its cell again,
shows the same environment and change reference instead of the parameters cell's defaults.
A step that reaches a gate nobody approved shows the gate's row in its own output and stops
(see ``gates``): Run All cannot wait for a click, so it stops there, and after Approve the
focus stays on the button, where Shift+Enter runs that cell again and goes on. On an environment
that requires approval a LIVE run's gate takes an approval id instead (four eyes, ``approval_row``).
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import incidentfile, journal, kernel
from .gates import Gated, is_approved, needs_approval, opened_by, show_in_place_with
from .config import environments
from .drill import Drill, current
from .journal import RUN_DIR_VAR

if TYPE_CHECKING:  # ipywidgets is imported only in a kernel that shows a widget
    import ipywidgets

# The operator's last choice in this kernel ("env", "change"): Run All must not reset it.
_chosen: dict[str, str] = {}


def unattended() -> bool:
    return bool(os.environ.get(RUN_DIR_VAR))


@dataclass
class FixedChoice:
    """What ``environment_picker`` returns under the runner: the parameters, unchanged."""

    value: str
    change: str | None = None


class EnvironmentChoice:
    """What the picker returns in JupyterLab: read ``.value`` (the environment) and ``.change``."""

    def __init__(self, dropdown: ipywidgets.Dropdown, change: ipywidgets.Text, box: ipywidgets.VBox) -> None:
        self.dropdown, self.change_box, self.box = dropdown, change, box

    @property
    def value(self) -> str:
        return str(self.dropdown.value)

    @value.setter
    def value(self, name: str) -> None:  # as choosing it in the dropdown (remembered across Run All)
        self.dropdown.value = name

    @property
    def change(self) -> str | None:
        return self.change_box.value.strip() or None


def _mode_badge(name: str, dry_run: bool) -> str:
    production = environments.load_environment(name).production
    mode = ('<b style="color:#1565c0">DRY-RUN</b>' if dry_run else '<b style="color:#e65100">LIVE</b>')
    prod = ' <b style="color:#fff;background:#c62828;padding:0 4px">PRODUCTION</b>' if production else ""
    return f"{html.escape(name)}: {mode}{prod}"


def environment_picker(default: str = "local", dry_run: bool = True,
                       change: str | None = None) -> FixedChoice | EnvironmentChoice:
    """A dropdown of the project's environments (production ones marked) and, for production, the
    change reference, asked here rather than at the first live step. Read ``.value``, ``.change``."""
    if unattended():
        return FixedChoice(default, change)
    import ipywidgets as widgets
    from IPython.display import display

    run = current()
    if run is not None and run.interactive is not None and run.data["finished_at"] is None:
        display(widgets.HTML(f"Environment {_mode_badge(run.env.name, run.dry_run)} "
                             f"(run {html.escape(run.run_id)} is open: call drill.finish() to change it)"))
        return FixedChoice(run.env.name, run.change)
    options = []
    for name in environments.environment_names():
        env = environments.load_environment(name)
        options.append((f"{name} — PRODUCTION" if env.production else name, name))
    names = [value for _, value in options]
    incident = incidentfile.load_incident_file(Path.cwd())  # a working copy runs where its incident is
    chosen = incident.env if incident is not None and incident.env else _chosen.get("env", default)
    initial = chosen if chosen in names else (default if default in names else None)
    picker = widgets.Dropdown(options=options, value=initial,
                              description="Environment", style={"description_width": "initial"},
                              disabled=incident is not None and bool(incident.env))
    change_box = widgets.Text(value=_chosen.get("change", change or ""), description="Change reference",
                              placeholder="CHG-1234 (required to go live on production)",
                              style={"description_width": "initial"})
    badge = widgets.HTML()

    def update(_: object = None) -> None:
        if picker.value is None:
            return
        _chosen["env"] = str(picker.value)
        _chosen["change"] = change_box.value.strip()
        production = environments.load_environment(str(picker.value)).production
        change_box.layout.display = None if production else "none"
        badge.value = _mode_badge(str(picker.value), dry_run)

    picker.observe(update, names="value")
    change_box.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox([picker, badge]), change_box])
    display(box)
    return EnvironmentChoice(picker, change_box, box)


def gate_panel(drill: Drill, gates: list[str], confirm: dict[str, str] | None = None) -> ipywidgets.VBox | None:
    """For each gate: a box where the operator types the gate's word (its name, or the word in
    ``confirm``, e.g. ``{"rollback": "ROLLBACK"}``) in full, and an Approve button, enabled only then.

    Approving records who approved, when and with what word in the run's journal; the gated step
    then runs without asking again. Under the runner nothing is shown: gates come from ``--approve``.
    """
    if drill.unattended:
        return None
    import ipywidgets as widgets
    from IPython.display import display

    panel = widgets.VBox([gate_row(drill, gate, (confirm or {}).get(gate) or gate) for gate in gates])
    display(panel)
    return panel


def gate_row(drill: Drill, gate: str, word: str) -> ipywidgets.HBox:
    """One gate: type ``word`` in full, then Approve. The button keeps the focus after approving
    (a disabled button would drop it, and Shift+Enter would then do nothing). A run held to four eyes
    (``gates.needs_approval``) gets ``approval_row`` instead."""
    if needs_approval(drill) and drill.interactive is not None:
        return approval_row(drill, gate)
    import ipywidgets as widgets

    typed = widgets.Text(placeholder=f"type {word}", description=f"gate {gate}", style={"description_width": "initial"})
    button = widgets.Button(description="Approve", button_style="danger", icon="check", disabled=True)
    state = widgets.Label(f"type {word} to enable Approve")

    def approved(how: str) -> None:
        typed.disabled = True
        button.disabled, button.description, button.button_style = False, "Approved", "success"
        state.value = f"✓ {how} — Shift+Enter goes on"

    def on_type(_: object) -> None:
        if button.description == "Approved":
            return
        ready = typed.value.strip() == word
        button.disabled = not ready
        state.value = "press Approve" if ready else f"type {word} to enable Approve"

    def approve(_: object) -> None:
        if button.description == "Approved" or typed.value.strip() != word:
            return  # already done, or the box changed after the button was enabled: nothing to approve
        at = journal.now_iso()
        how = f"confirmed in the gate panel by {drill.data['operator']} (typed {word})"
        drill.approve_gate(gate, how, "panel", word)
        approved(f"approved by {drill.data['operator']} at {at}")

    if is_approved(drill, gate, word):
        approved("approved")
    typed.observe(on_type, names="value")
    button.on_click(approve)
    return widgets.HBox([typed, button, state])


def approval_row(drill: Drill, gate: str) -> ipywidgets.HBox:
    """One gate of a live run that needs an approval: paste its id, press Approve, which checks it
    (``runner/personplan.approve_with``): the gate opens only when it is valid; otherwise the row
    says, in one line, which condition failed."""
    import ipywidgets as widgets

    from .errors import DrillbookError
    from .runner import personplan

    assert drill.interactive is not None
    source = drill.interactive.plan_source
    pasted = widgets.Text(placeholder="apv-…", description=f"gate {gate} approval id",
                          style={"description_width": "initial"})
    button = widgets.Button(description="Approve", button_style="danger", icon="check", disabled=True)
    state = widgets.Label(personplan.PASTE)

    def approved(text: str) -> None:
        pasted.disabled = True
        button.disabled, button.description, button.button_style = False, "Approved", "success"
        state.value = f"✓ {text} — Shift+Enter goes on"

    def on_paste(_: object) -> None:
        if button.description != "Approved":
            button.disabled = not pasted.value.strip()

    def approve(_: object) -> None:
        if button.description == "Approved" or not pasted.value.strip():
            return
        try:
            info = personplan.approve_with(drill, source, pasted.value, gate)
        except DrillbookError as exc:
            state.value = f"✗ {exc.message}"
            return
        approved(f"opened by approval {info['id']} of {info['approver']}")

    already = opened_by(drill, gate)
    if already is not None:
        approved(f"opened by approval {already['id']} of {already['approver']}")
    pasted.observe(on_paste, names="value")
    button.on_click(approve)
    return widgets.HBox([pasted, button, state])


def _in_place(run: Gated, gate: str, title: str, word: str) -> None:
    """A step stopped at ``gate``: its row, in the step's own output."""
    if isinstance(run, Drill):
        from IPython.display import display

        display(gate_row(run, gate, word))


if getattr(kernel.ipython(), "kernel", None) is not None:  # a kernel with a frontend that shows widgets
    show_in_place_with(_in_place)
