"""Cron expressions and ``parameters/schedule.yaml``: which drill runs where, when it is due, and
when it is overdue.

The cron arithmetic is croniter's (the library Airflow's own scheduler uses, so a DAG built from
this schedule fires at the same minutes as ``drillbook run --due``): five fields (minute hour
day-of-month month day-of-week) with ``*``, lists, ranges, steps, month/day names, and the
``@hourly``/``@daily``/``@weekly``/``@monthly``/``@yearly`` shorthands. What is checked here is
what croniter is lenient about: exactly five fields (no seconds or year field), and an error that
names the field. Times are UTC throughout, as in the evidence records.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from .. import paths
from ..errors import ConfigError, DrillbookError
from .environments import validate_environment_name
from .yamlfile import read_yaml

SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
DEFAULT_GRACE = timedelta(hours=1)
# A firing this far back is still found (29 February can be eight years from the last: 2096 → 2104).
LOOK_BACK_DAYS = 366 * 9


def _croniter() -> ModuleType:
    """croniter, imported on first use: about 0.1 s, and most commands never compute a firing."""
    import croniter

    return croniter


def _field_error(parts: list[str]) -> str:
    """Which field croniter rejects, checked one at a time with the others wild."""
    for index, (name, low, high) in enumerate(FIELDS):
        probe = ["*"] * 5
        probe[index] = parts[index]
        if not _croniter().croniter.is_valid(" ".join(probe)):
            plain = all(re.fullmatch(r"\d+(-\d+)?(/\d+)?", part) for part in parts[index].split(","))
            what = "is outside" if plain else "is not a value, range, list or step of names or numbers in"
            return f"{name} {parts[index]!r} {what} {low}-{high}"
    return "croniter does not accept it"


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class Cron:
    text: str  # as written (a shorthand stays a shorthand)
    expression: str  # the five fields croniter reads

    @classmethod
    def parse(cls, text: str) -> Cron:
        expanded = SHORTHANDS.get(text.strip(), text.strip())
        parts = expanded.split()
        if len(parts) != 5:
            raise ConfigError(
                f"bad cron expression {text!r}: expected 5 fields, got {len(parts)}",
                "write minute hour day-of-month month day-of-week, e.g. '0 3 * * 1' or @daily",
            )
        if not _croniter().croniter.is_valid(expanded):
            raise ConfigError(f"bad cron expression {text!r}: {_field_error(parts)}")
        return cls(text, " ".join(parts))

    def next_after(self, after: datetime) -> datetime:
        """The first firing time strictly after ``after`` (cron has minutes: seconds never match)."""
        lib = _croniter()
        try:
            return _utc(lib.croniter(self.expression, _utc(after)).get_next(datetime))
        except lib.CroniterBadDateError:
            raise ConfigError(f"cron expression {self.text!r} never fires") from None

    def previous_before(self, before: datetime, horizon_days: int = 400) -> datetime | None:
        """The last firing time at or before ``before`` (None if none within the horizon)."""
        lib = _croniter()
        try:  # croniter's get_prev is strict: start just past ``before`` so a firing at it counts
            found = _utc(lib.croniter(self.expression, _utc(before) + timedelta(seconds=1)).get_prev(datetime))
        except lib.CroniterBadDateError:
            return None
        return found if found >= before - timedelta(days=horizon_days) else None


@dataclass(frozen=True)
class Entry:
    """One line of the schedule: run ``drill`` against ``env`` on ``cron``."""

    drill: str
    env: str
    cron: Cron
    parameters: dict[str, Any] = field(default_factory=dict)
    approve: tuple[str, ...] = ()
    grace: timedelta = DEFAULT_GRACE  # how long after a firing a run may start before it is overdue
    change: str | None = None  # the standing change reference a production entry runs under

    @property
    def key(self) -> str:
        """``drill@env``: how a person, a lock file and an Airflow DAG id name the entry."""
        return f"{self.drill}@{self.env}"


def schedule_path(project: Path | None = None) -> Path:
    return (project or paths.project_root()) / "parameters" / "schedule.yaml"


def load_schedule(project: Path | None = None) -> list[Entry]:
    path = schedule_path(project)
    if not path.is_file():
        return []
    data = read_yaml(path, "schedule") or {}
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list):
        raise ConfigError(f"{path}: expected a top-level 'runs:' list")
    return [_entry(item, f"{path}: runs[{index}]", project) for index, item in enumerate(runs)]


def _entry(item: object, where: str, project: Path | None) -> Entry:
    """One item of ``runs:``, checked key by key (YAML gives any type anywhere)."""
    if not isinstance(item, dict) or not {"drill", "env", "cron"} <= item.keys():
        raise ConfigError(f"{where}: each run needs drill, env and cron")
    unknown = set(map(str, item)) - {"drill", "env", "cron", "parameters", "approve", "grace", "change"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    try:
        cron = Cron.parse(str(item["cron"]))
        env = validate_environment_name(item["env"], project)
    except DrillbookError as exc:
        raise ConfigError(f"{where}: {exc.message}", exc.hint) from None
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ConfigError(f"{where}: parameters: expected a mapping of name: value",
                          "write parameters: {name: value}")
    approve = item.get("approve") or []
    if not isinstance(approve, list) or not all(isinstance(gate, str) for gate in approve):
        raise ConfigError(f"{where}: approve: expected a list of gate names", "write approve: [gate, other-gate]")
    change = item.get("change")
    if change is not None and (not isinstance(change, str) or not change.strip()):
        raise ConfigError(f"{where}: change: expected a change reference (text)", "write change: CHG-1234")
    return Entry(str(item["drill"]), env, cron, dict(parameters), tuple(approve), _grace(item.get("grace"), where),
                 change)


def _grace(value: object, where: str) -> timedelta:
    """``grace:`` as minutes (a number) or a duration such as ``90s``, ``30m``, ``2h``, ``1d``."""
    if value is None:
        return DEFAULT_GRACE
    match = re.fullmatch(r"\s*(\d{1,6})\s*([smhd]?)\s*", str(value)) if not isinstance(value, bool) else None
    if match is None:
        raise ConfigError(f"{where}: grace: {value!r} is not a duration", "write grace: 30m (or 90s, 2h, 1d)")
    unit = {"s": "seconds", "m": "minutes", "": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def is_due(cron: Cron, last: datetime | None, now: datetime) -> bool:
    """The one rule for "is it due": the cron has fired since ``last``, the drill's latest finish
    on that environment (never finished: due). ``drillbook run --due`` and the dashboard both ask it.

    It walks forward from ``last`` instead of back from ``now``, so a rare cron (29 February) is
    not lost beyond a look-back horizon. A cron that never fires raises ``ConfigError``.
    """
    next_firing = cron.next_after(last if last is not None else now)  # also proves the cron fires
    return last is None or next_firing <= now


def due_entries(entries: list[Entry], last_finished: dict[tuple[str, str], datetime],
                now: datetime) -> list[Entry]:
    """The entries that are due (``is_due``) given ``last_finished`` by (drill, env); dry runs do
    not count and should not be in it."""
    return [entry for entry in entries if is_due(entry.cron, last_finished.get((entry.drill, entry.env)), now)]


def missed_firing(cron: Cron, grace: timedelta, last: datetime | None, now: datetime) -> datetime | None:
    """The one rule for "overdue", asked by ``drillbook schedule``, ``run --due`` (its notification)
    and the dashboard alike: the latest firing at least ``grace`` before ``now`` after which no run
    (passed or not) finished (``last``: the latest finish, None if never); None when not overdue."""
    missed = cron.previous_before(now - grace, LOOK_BACK_DAYS)
    if missed is None or (last is not None and last >= missed):
        return None
    return missed


def overdue_since(entry: Entry, last: datetime | None, now: datetime) -> datetime | None:
    """``missed_firing`` for a schedule entry, with the grace it sets."""
    return missed_firing(entry.cron, entry.grace, last, now)
