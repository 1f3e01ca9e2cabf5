"""The catalog: runbooks (``runbooks/``) and drills (``notebooks/drills/``) found on disk.

A notebook's identity is its file name without ``.ipynb``; what it is, who owns it and
what it proves live in ``metadata.drillbook``, validated here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import paths
from ..errors import ConfigError, DrillbookError, NotFound
from . import notebooks
from .schedule import Cron

SOURCES = (("runbooks", "runbook"), ("notebooks/drills", "drill"))


class Metadata(BaseModel):
    """``metadata.drillbook`` of a runbook or drill notebook."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["runbook", "drill"]
    title: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    description: str = ""
    objectives: list[str] = Field(default_factory=list)  # names of environment objectives it measures
    controls: list[str] = Field(default_factory=list)  # e.g. "SOC 2 CC7.5", "ISO 27001 A.8.13"
    schedule: str | None = None  # cron; None for runbooks run on demand
    tags: list[str] = Field(default_factory=list)
    timeout_seconds: int = Field(1800, gt=0)
    # Runbooks: how urgent the incident it answers is (response within 15 min / 1 h / 4 h / 24 h),
    # the alert that opens it, and the symptom an operator sees (lint requires the severity).
    severity: Literal["P0", "P1", "P2", "P3"] | None = None
    alert: str = ""
    symptom: str = ""

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Cron.parse(value)
            except ConfigError as exc:
                raise ValueError(exc.message) from None
        return value


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    meta: Metadata

    @property
    def kind(self) -> str:
        return self.meta.kind


def validate_metadata(raw: dict | None, path: Path) -> Metadata:
    if raw is None:
        raise ConfigError(
            f"{path}: no metadata.drillbook",
            "add kind, title, owner (and objectives, controls, schedule) under metadata.drillbook",
        )
    try:
        return Metadata.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: metadata.drillbook.{where}: {what}") from None


def load_entry(path: Path) -> Entry:
    nb = notebooks.read_notebook(path)
    return Entry(path.stem, path, validate_metadata(notebooks.drillbook_metadata(nb), path))


def load_optional_entry(path: Path) -> Entry | None:
    """The entry of a notebook that has ``metadata.drillbook``; None for a plain notebook."""
    nb = notebooks.read_notebook(path)
    meta = notebooks.drillbook_metadata(nb)
    return None if meta is None else Entry(path.stem, path, validate_metadata(meta, path))


def notebook_paths(project: Path | None = None) -> list[Path]:
    root = project or paths.project_root()
    found: list[Path] = []
    for folder, _kind in SOURCES:
        found.extend(sorted((root / folder).glob("*.ipynb")))
    return found


def load_catalog(project: Path | None = None, strict: bool = True) -> list[Entry]:
    """Every catalogued notebook. With ``strict=False`` invalid notebooks are skipped (``lint`` reports them)."""
    entries = []
    for path in notebook_paths(project):
        try:
            entries.append(load_entry(path))
        except DrillbookError:
            if strict:
                raise
    names = [e.name for e in entries]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate and strict:
        raise ConfigError(f"two notebooks are named {duplicate!r}", "rename one: names must be unique")
    return entries


def find(name_or_path: str, project: Path | None = None) -> tuple[Path, Entry | None]:
    """A catalog name (``smoke``) or a path to any notebook. Returns the path and its entry if catalogued."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".ipynb" or candidate.exists():
        if not candidate.is_file():
            raise NotFound(f"notebook not found: {name_or_path}")
        return candidate.resolve(), load_optional_entry(candidate)
    for path in notebook_paths(project):
        if path.stem == name_or_path:
            return path, load_entry(path)
    known = ", ".join(p.stem for p in notebook_paths(project)) or "none"
    raise NotFound(f"unknown drill or runbook {name_or_path!r}", f"known: {known} (see drillbook list)")
