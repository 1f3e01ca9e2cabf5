"""One machine, done properly: overdue entries, `drillbook schedule [install]`, and two `run --due` at once."""
from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import DRILLBOOK, Project, cli
from drillbook.config.schedule import Cron, Entry, load_schedule, overdue_since
from drillbook.config.schedule_install import MARKER, cron_line, merge_crontab
from drillbook.errors import ConfigError

UTC = timezone.utc
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("cron, grace, last, missed", [
    ("0 10 * * *", timedelta(hours=1), None, datetime(2026, 12, 1, 10, 0, tzinfo=UTC)),          # fired, never ran
    ("0 10 * * *", timedelta(hours=3), None, datetime(2026, 11, 30, 10, 0, tzinfo=UTC)),         # today's is in grace
    ("0 10 * * *", timedelta(hours=1), datetime(2026, 12, 1, 10, 20, tzinfo=UTC), None),         # a run followed
    ("0 10 * * *", timedelta(hours=1), datetime(2026, 12, 1, 11, 30, tzinfo=UTC), None),         # late, but ran
    ("0 10 * * *", timedelta(hours=1), datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
     datetime(2026, 12, 1, 10, 0, tzinfo=UTC)),                                                  # ran before it
    ("30 11 * * *", timedelta(hours=1), datetime(2026, 11, 30, 11, 40, tzinfo=UTC), None),        # 11:30 in grace
    ("0 0 29 2 *", timedelta(hours=1), datetime(2023, 1, 1, tzinfo=UTC),
     datetime(2024, 2, 29, tzinfo=UTC)),                                                         # rare cron, far back
])
def test_overdue_means_the_cron_fired_and_no_run_followed_within_grace(
        cron: str, grace: timedelta, last: datetime | None, missed: datetime | None) -> None:
    assert overdue_since(Entry("d", "local", Cron.parse(cron), grace=grace), last, NOW) == missed


def test_schedule_entries_take_a_grace_and_a_change_reference(project: Project) -> None:
    path = project.root / "parameters" / "schedule.yaml"
    path.write_text("runs:\n  - {drill: a, env: local, cron: '@daily', grace: 30m, change: CHG-7}\n"
                    "  - {drill: b, env: local, cron: '@daily', grace: 2}\n")
    first, second = load_schedule(project.root)
    assert (first.grace, first.change, second.grace) == (timedelta(minutes=30), "CHG-7", timedelta(minutes=2))
    path.write_text("runs:\n  - {drill: a, env: local, cron: '@daily', grace: soon}\n")
    with pytest.raises(ConfigError, match="grace: 'soon' is not a duration"):
        load_schedule(project.root)


def test_the_crontab_line_replaces_only_this_projects_line(tmp_path: Path) -> None:
    project = tmp_path / "p 100%"
    line = cron_line(project, 5)
    assert line.startswith("*/5 * * * * cd ") and " run --due >> " in line and line.endswith(f"{MARKER}{project}")
    assert "p 100\\%" in line  # an unescaped % would end cron's command there
    theirs = "MAILTO=ops\n0 1 * * * backup.sh\n"
    once = merge_crontab(theirs, line, project)
    assert merge_crontab(once, line, project) == once  # idempotent
    moved = merge_crontab(once, cron_line(project, 10), project)
    assert moved.count(MARKER) == 1 and "*/10 " in moved and moved.startswith(theirs)


def test_schedule_install_is_idempotent_in_crontab_and_systemd(project: Project, tmp_path: Path) -> None:
    table = tmp_path / "crontab.txt"
    table.write_text("0 1 * * * backup.sh\n")
    # A stand-in for crontab(1) that keeps the table in a file: the real one edits this machine's spool.
    program = tmp_path / "crontab"
    program.write_text(f'#!/bin/sh\nif [ "$1" = -l ]; then cat {table}; else cat > {table}; fi\n')
    program.chmod(0o755)
    env = {"DRILLBOOK_CRONTAB": str(program)}
    printed = cli(project, "schedule", "install", "--print", env=env)
    assert printed.code == 0 and table.read_text() == "0 1 * * * backup.sh\n"  # --print changes nothing
    first = cli(project, "schedule", "install", env=env)
    second = cli(project, "schedule", "install", env=env)
    assert first.code == second.code == 0, first.output + second.output
    assert "installed: */5 " in first.stdout and "already installed" in second.stdout
    lines = table.read_text().splitlines()
    assert lines[0] == "0 1 * * * backup.sh" and len(lines) == 2 and f"DRILLBOOK_PROJECT={project.root}" in lines[1]

    units = tmp_path / "units"
    once = cli(project, "schedule", "install", "--systemd", "--unit-dir", str(units), env={"PATH": "/nonexistent"})
    again = cli(project, "schedule", "install", "--systemd", "--unit-dir", str(units), env={"PATH": "/nonexistent"})
    assert once.code == again.code == 0, once.output
    assert "wrote " in once.stderr and "units already up to date" in again.stderr
    assert "systemctl --user enable --now" in once.stderr  # no systemd here: says what to run
    timer = next(units.glob("*.timer")).read_text()
    service = next(units.glob("*.service")).read_text()
    assert "OnCalendar=*:0/5" in timer and "run --due" in service and str(project.root) in service


def _start_due(project: Project) -> subprocess.Popen[str]:
    return subprocess.Popen([str(DRILLBOOK), "run", "--due"], cwd=project.root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})


def _ledger(project: Project) -> list[dict[str, object]]:
    path = project.archive / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.integration
def test_two_due_invocations_at_once_never_run_an_entry_twice(project: Project, tmp_path: Path) -> None:
    project.add_notebook("slow.ipynb")
    marker = tmp_path / "marker"
    plan = project.root / "parameters" / "schedule.yaml"
    slow = f"  - {{drill: slow, env: local, cron: '@yearly', parameters: {{marker_path: '{marker}', seconds: 3}}}}\n"
    plan.write_text("runs:\n" + slow)
    first = _start_due(project)
    deadline = time.monotonic() + 120
    while not Path(f"{marker}.started").exists():  # the first invocation is inside the drill now
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.1)
    second = _start_due(project)
    out2, err2 = second.communicate(timeout=120)
    out1, err1 = first.communicate(timeout=120)
    assert "skipped slow@local: another `drillbook run --due` is running it" in err2, out2 + err2
    assert second.returncode != 2 and "environment 'local' is busy" not in err2
    assert [e["drill"] for e in _ledger(project)] == ["slow"], out1 + err1
    third = cli(project, "run", "--due")  # afterwards: asked again, nothing is due
    assert [e["drill"] for e in _ledger(project)] == ["slow"], third.output
    plan.write_text("runs:\n" + slow + "  - {drill: never-ran, env: local, cron: '0 0 1 1 *'}\n")
    listed = cli(project, "schedule")
    assert listed.code == 0, listed.output
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 5}
    assert rows["slow"].rstrip(" │").endswith("ok") and "never" not in rows["slow"]
    assert "OVERDUE since" in rows["never-ran"] and "never" in rows["never-ran"]
