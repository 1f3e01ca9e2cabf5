"""What ``drillbook schedule install`` puts in place: a crontab line or a systemd timer that calls
``drillbook run --due`` every few minutes for one project.

Idempotent by construction: the crontab line carries a marker naming the project, and installing
replaces the project's line (others' lines stay as they are); the systemd units are named after
the project and rewritten only when their text changes. The command is this checkout's own
``drillbook`` with ``DRILLBOOK_PROJECT`` set, so cron's bare environment runs the right project.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

MARKER = "# drillbook run --due for "
DEFAULT_EVERY = 5  # minutes


def _check_every(every: int) -> int:
    if not 1 <= every <= 59:
        raise ConfigError(f"--every {every}: expected minutes between 1 and 59", "e.g. --every 5")
    return every


def drillbook_executable() -> Path:
    """The ``drillbook`` beside the running interpreter (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "drillbook"
    if beside.is_file():
        return beside
    found = shutil.which("drillbook")
    if found is None:
        raise ConfigError("no drillbook executable found", "install the project first: make venv")
    return Path(found)


def due_command(project: Path) -> str:
    """The shell command cron and systemd run: the schedule, in the project, logged under its state."""
    log = project / ".drillbook" / "schedule.log"
    return (f"cd {shlex.quote(str(project))} && mkdir -p .drillbook && DRILLBOOK_PROJECT={shlex.quote(str(project))} "
            f"{shlex.quote(str(drillbook_executable()))} run --due >> {shlex.quote(str(log))} 2>&1")


def cron_line(project: Path, every: int = DEFAULT_EVERY) -> str:
    # In a crontab an unescaped % ends the command: a path with one would be cut short.
    command = due_command(project).replace("%", "\\%")
    return f"*/{_check_every(every)} * * * * {command} {MARKER}{project}"


def merge_crontab(existing: str, line: str, project: Path) -> str:
    """``existing`` with this project's line replaced by ``line`` (added when missing)."""
    kept = [row for row in existing.splitlines() if not row.endswith(f"{MARKER}{project}")]
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join([*kept, line]) + "\n"


def _crontab_program() -> str:
    return os.environ.get("DRILLBOOK_CRONTAB", "crontab")  # e.g. a wrapper for another user's crontab


def read_crontab() -> str:
    program = _crontab_program()
    try:
        done = subprocess.run([program, "-l"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise ConfigError(f"cannot run {program}: {exc.strerror or exc}",
                          "install cron (apt-get install cron), or use --systemd, or --print the line") from None
    if done.returncode != 0 and "no crontab" not in done.stderr.lower():
        raise ConfigError(f"{program} -l failed: {' '.join(done.stderr.split())[:200]}")
    return done.stdout if done.returncode == 0 else ""


def install_crontab(project: Path, every: int = DEFAULT_EVERY) -> tuple[bool, str]:
    """Put the project's line in the user's crontab; (whether it changed, the line)."""
    line = cron_line(project, every)
    existing = read_crontab()
    merged = merge_crontab(existing, line, project)
    if merged == existing:
        return False, line
    done = subprocess.run([_crontab_program(), "-"], input=merged, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise ConfigError(f"crontab refused the new table: {' '.join(done.stderr.split())[:200]}")
    return True, line


@dataclass(frozen=True)
class Units:
    name: str  # without suffix
    service: str
    timer: str


def unit_name(project: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", project.name).strip("-")[:30] or "project"
    return f"drillbook-due-{slug}-{hashlib.sha256(str(project).encode()).hexdigest()[:8]}"


def systemd_units(project: Path, every: int = DEFAULT_EVERY) -> Units:
    name = unit_name(project)
    service = (f"[Unit]\nDescription=drillbook run --due for {project}\n\n[Service]\nType=oneshot\n"
               f"ExecStart=/bin/sh -c {shlex.quote(due_command(project))}\n")
    timer = (f"[Unit]\nDescription=drillbook run --due every {_check_every(every)} minutes for {project}\n\n"
             f"[Timer]\nOnCalendar=*:0/{every}\nPersistent=true\nUnit={name}.service\n\n"
             "[Install]\nWantedBy=timers.target\n")
    return Units(name, service, timer)


def systemd_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def install_systemd(project: Path, every: int = DEFAULT_EVERY, directory: Path | None = None) -> tuple[list[Path], Units]:
    """Write the user units (only those whose text changed); (the files written, the units)."""
    units = systemd_units(project, every)
    directory = directory or systemd_dir()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".service", units.service), (".timer", units.timer)):
        path = directory / f"{units.name}{suffix}"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written, units


def enable_timer(units: Units) -> str | None:
    """Ask the user's systemd to load and start the timer; None when done, else what to run by hand."""
    commands = [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", f"{units.name}.timer"]]
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except OSError:
            done = None
        if done is None or done.returncode != 0:
            return " && ".join(shlex.join(c) for c in commands)
    return None
