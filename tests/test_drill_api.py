"""The drill API in-process: steps, dry-run, gates, production, checks, measures, cleanups, journal.

No kernel here; `drill.start` runs in the test process with a temporary project. Where a
person would type at a prompt, `input` is replaced (the only fake in this file).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import drillbook
import pytest
from conftest import Project
from drillbook import ui
from drillbook.errors import ChangeRequired, CheckFailed, GateNotApproved

pytestmark = pytest.mark.filterwarnings("ignore:No kernel detected:UserWarning")


@pytest.fixture(autouse=True)
def _forget_current_drill():
    """Each test starts from a kernel with no drill running (the module keeps the current one)."""
    yield
    import drillbook.drill

    drillbook.drill._current = None


def journal(run_dir: Path) -> dict:
    return json.loads((run_dir / "journal.json").read_text())


def test_steps_checks_measures_are_journalled_as_they_happen(run_dir: Path) -> None:
    drill = drillbook.start(env="local", dry_run=False, run_id="r1")
    assert drill.step("Read", lambda: 7) == 7
    assert journal(run_dir)["steps"][0]["status"] == "passed"  # written before finish()
    drill.check("seven", True)
    drill.measure("rto_seconds", 31.0, objective="rto_seconds")
    drill.measure("rpo_seconds", 1.0, objective="rpo_seconds")
    with pytest.raises(CheckFailed, match="objective missed: rto_seconds"):
        drill.finish()
    data = journal(run_dir)
    assert data["status"] == "failed"
    assert [m["verdict"] for m in data["measures"]] == ["missed", "no objective"]


def test_dry_run_skips_mutating_steps_and_cleanups(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    touched = []
    drill = drillbook.start(env="local", dry_run=True)
    drill.cleanup(lambda: touched.append("cleanup"), "undo")
    assert drill.step("Break it", lambda: touched.append("step"), mutating=True, plan="stop the primary") is None
    drill.step("Look", lambda: touched.append("read"))
    drill.finish()
    assert touched == ["read"]
    assert "DRY RUN, would: stop the primary" in capsys.readouterr().out
    data = journal(run_dir)
    assert data["steps"][0]["status"] == "dry-run" and data["cleanups"][0]["status"] == "dry-run"


def test_cleanups_run_last_in_first_out_even_after_failures(run_dir: Path) -> None:
    order = []
    drill = drillbook.start(env="local", dry_run=False)
    drill.cleanup(lambda: order.append("first registered"), "one")
    drill.cleanup(lambda: (_ for _ in ()).throw(RuntimeError("cleanup broke")), "two")
    drill.cleanup(lambda: order.append("last registered"), "three")
    with pytest.raises(ZeroDivisionError):
        drill.step("Divide", lambda: 1 / 0)
    drill.fail(ZeroDivisionError("division by zero"))
    assert order == ["last registered", "first registered"]  # the failing cleanup did not stop the others
    data = journal(run_dir)
    assert data["status"] == "error" and [c["status"] for c in data["cleanups"]] == ["passed", "failed", "passed"]


def test_keyboard_interrupt_means_aborted(run_dir: Path) -> None:
    with drillbook.start(env="local", dry_run=False) as drill:
        drill.cleanup(lambda: None, "undo")
        with pytest.raises(KeyboardInterrupt):
            with drill:
                raise KeyboardInterrupt
    assert journal(run_dir)["status"] == "aborted"


def test_unattended_gate_fails_at_once(run_dir: Path) -> None:
    drill = drillbook.start(env="local", dry_run=False)
    with pytest.raises(GateNotApproved, match="gate 'promote'"):
        drill.step("Promote", lambda: None, mutating=True, gate="promote")


def test_interactive_gate_asks_for_the_gate_name(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    del os.environ["DRILLBOOK_RUN_DIR"]  # interactive: nobody started us
    answers = iter(["yes", "ROLLBACK"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    drill = drillbook.start(env="local", dry_run=False)
    with pytest.raises(GateNotApproved, match="not confirmed \\(typed 'yes'\\)"):
        drill.step("Roll back", lambda: "done", mutating=True, gate="ROLLBACK")
    drill = drillbook.start(env="local", dry_run=False)
    assert drill.step("Roll back", lambda: "done", mutating=True, gate="ROLLBACK") == "done"
    gate = drill.data["gates"][0]
    assert gate["how"].startswith("confirmed at the prompt by ") and gate["method"] == "prompt"
    assert gate["asked_at"] <= gate["at"]


def test_production_needs_a_change_reference(project: Project, run_dir: Path) -> None:
    project.write_env("prod", "production: true\n")
    drill = drillbook.start(env="prod", dry_run=False, approve=["x"])
    drill.step("Read", lambda: 1)  # reading production needs no change reference
    with pytest.raises(ChangeRequired):
        drill.step("Change", lambda: 1, mutating=True)
    drill = drillbook.start(env="prod", dry_run=False, change="CHG-1")
    assert drill.step("Change", lambda: 2, mutating=True) == 2


def test_not_applicable_is_never_a_pass(run_dir: Path) -> None:
    drill = drillbook.start(env="local", dry_run=False)
    drill.not_applicable("Rotate SSH key", "no SSH host in this environment")
    drill.finish()
    assert journal(run_dir)["steps"][0]["status"] == "not-applicable"


def test_secrets_resolved_by_the_drill_are_scrubbed_from_its_journal(project: Project, run_dir: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    os.environ["T_SECRET"] = "sup3r-s3cret-value"
    project.write_env("local", "secrets:\n  token: env:T_SECRET\n")
    drill = drillbook.start(env="local", dry_run=False)
    value = drill.secret("token")
    drill.check(f"token is {value}", True, value)
    assert "sup3r" not in (run_dir / "journal.json").read_text()
    assert "sup3r" not in capsys.readouterr().out


def test_ui_degrades_to_parameters_under_the_runner(run_dir: Path) -> None:
    assert ui.environment_picker("local").value == "local"
    assert ui.gate_panel(drillbook.start(env="local"), ["promote"]) is None


def test_gate_panel_approves_only_the_exact_name(run_dir: Path) -> None:
    del os.environ["DRILLBOOK_RUN_DIR"]
    drill = drillbook.start(env="local", dry_run=False)
    panel = ui.gate_panel(drill, ["promote"])
    typed, button, state = panel.children[0].children
    typed.value = "promot"
    assert button.disabled and state.value == "type promote to enable Approve"
    button.click()  # a click that raced the last keystroke: nothing approved, nothing contradictory said
    assert "promote" not in drill.approved
    typed.value = "promote"
    assert not button.disabled and state.value == "press Approve"
    button.click()
    assert "promote" in drill.approved and typed.disabled
    assert not button.disabled and button.description == "Approved"  # keeps the focus: Shift+Enter goes on
    assert drill.data["gates"][0]["how"].startswith("confirmed in the gate panel by ")
    assert drill.step("Promote", lambda: "ok", mutating=True, gate="promote") == "ok"
    pressed, passed = drill.data["gates"]  # the step's entry: confirmed in the panel, when it was pressed
    assert passed["method"] == pressed["method"] == "panel" and passed["at"] == pressed["at"]
    assert "in advance" not in passed["how"]


def test_a_destructive_gate_needs_its_word_typed_in_full(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    del os.environ["DRILLBOOK_RUN_DIR"]
    drill = drillbook.start(env="local", dry_run=False)
    typed, button, _ = ui.gate_panel(drill, ["rollback"]).children[0].children
    typed.value = "rollback"
    button.click()  # approved with the gate's name, but the step asks for ROLLBACK
    monkeypatch.setattr("builtins.input", lambda prompt: "rollback")
    with pytest.raises(GateNotApproved, match="not confirmed"):
        drill.step("Roll back", lambda: "done", mutating=True, gate="rollback", confirm="ROLLBACK")
    drill = drillbook.start(env="local", dry_run=False)
    typed, button, state = ui.gate_panel(drill, ["rollback"], confirm={"rollback": "ROLLBACK"}).children[0].children
    assert state.value == "type ROLLBACK to enable Approve"
    typed.value = "ROLLBACK"
    button.click()
    assert drill.step("Roll back", lambda: "done", mutating=True, gate="rollback", confirm="ROLLBACK") == "done"


def test_in_jupyterlab_an_unapproved_gate_stops_the_cell_and_keeps_the_run_open(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drillbook import drill as drill_module, gates

    del os.environ["DRILLBOOK_RUN_DIR"]
    shown: list[tuple[str, str, str]] = []
    monkeypatch.setattr(gates, "_in_place", [lambda run, gate, title, word: shown.append((gate, title, word))])
    drill = drillbook.start(env="local", dry_run=False)
    with pytest.raises(gates.AwaitingApproval) as stopped:
        drill.step("Promote pg2", lambda: "promoted", mutating=True, gate="promote")
    assert shown == [("promote", "Promote pg2", "promote")]
    assert stopped.value._render_traceback_()[1].startswith("hint: type promote above and press Approve")
    drill_module._cell_failed(stopped.value)  # what the kernel's hook does after the cell raised
    assert not drill._closed and drill.data["steps"] == []  # still open; the step never started
    drill.approve_gate("promote", "confirmed in the gate panel by test", "panel", "promote")
    assert drill.step("Promote pg2", lambda: "promoted", mutating=True, gate="promote") == "promoted"


def test_a_live_production_run_in_jupyterlab_asks_for_the_change_reference_at_start(project: Project) -> None:
    os.environ["DRILLBOOK_PROJECT"] = str(project.root)
    project.write_env("prod", "production: true\n")
    with pytest.raises(ChangeRequired, match="needs a change reference before it starts"):
        drillbook.start(env="prod", dry_run=False)
    assert drillbook.start(env="prod", dry_run=True).dry_run  # a dry run needs none
    assert drillbook.start(env="prod", dry_run=False, change="CHG-7").change == "CHG-7"
