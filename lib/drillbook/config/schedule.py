"""Cron expressions and ``parameters/schedule.yaml``: which drill runs where, and when it is due.

Deliberately small: five-field cron (minute hour day-of-month month day-of-week) with
``*``, lists, ranges, steps, month/day names and the ``@hourly``/``@daily``/``@weekly``/
``@monthly`` shorthands. Times are UTC throughout, as in the evidence records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
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
MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
DAYS = "sun mon tue wed thu fri sat".split()
FIELDS = (("minute", 0, 59, []), ("hour", 0, 23, []), ("day of month", 1, 31, []),
          ("month", 1, 12, MONTHS), ("day of week", 0, 7, DAYS))


def _value(text: str, names: list[str]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + (1 if names is MONTHS else 0)
    return int(text)


def _parse_field(text: str, name: str, low: int, high: int, names: list[str]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = _value(a, names), _value(b, names)
        else:
            start = _value(body, names)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high and start <= end and step > 0):
            raise ValueError(f"{name} {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        expanded = SHORTHANDS.get(text.strip(), text.strip())
        parts = expanded.split()
        if len(parts) != 5:
            raise ConfigError(
                f"bad cron expression {text!r}: expected 5 fields, got {len(parts)}",
                "write minute hour day-of-month month day-of-week, e.g. '0 3 * * 1' or @daily",
            )
        try:
            sets = [_parse_field(p, n, lo, hi, names) for p, (n, lo, hi, names) in zip(parts, FIELDS)]
        except ValueError as exc:
            raise ConfigError(f"bad cron expression {text!r}: {exc}") from None
        weekdays = frozenset(d % 7 for d in sets[4])  # 7 is Sunday too
        return cls(text, sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # cron: when both are restricted, either may match
            return dom and dow
        return dom or dow

    def next_after(self, after: datetime) -> datetime:
        """The first firing time strictly after ``after``."""
        t = after.astimezone(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = t + timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                return t
        raise ConfigError(f"cron expression {self.text!r} never fires")

    def previous_before(self, before: datetime, horizon_days: int = 400) -> datetime | None:
        """The last firing time at or before ``before`` (None if none within the horizon).

        Looks back through widening windows, so a frequent schedule walks a few firings, not
        a year of them.
        """
        for window in (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=horizon_days)):
            t = self.next_after(before - window - timedelta(minutes=1))
            if t > before:
                continue
            while True:
                following = self.next_after(t)
                if following > before:
                    return t
                t = following
        return None


@dataclass(frozen=True)
class Entry:
    """One line of the schedule: run ``drill`` against ``env`` on ``cron``."""

    drill: str
    env: str
    cron: Cron
    parameters: dict[str, Any] = field(default_factory=dict)
    approve: tuple[str, ...] = ()


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
    unknown = set(map(str, item)) - {"drill", "env", "cron", "parameters", "approve"}
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
    return Entry(str(item["drill"]), env, cron, dict(parameters), tuple(approve))


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
