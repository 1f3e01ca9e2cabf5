"""What the site shows, read once from the ledger, the records and ``drillbook verify``.

Build cost must grow with new runs, not with the archive, so each run's record is reduced to a
small summary that is cached (keyed by run id and the MANIFEST hash the ledger signed) outside
``docs/``; a rebuild reads only the records of runs it has not seen. ``verify`` is the exception
on purpose: the site states whether every bundle is intact *now*, so it re-hashes the archive
each build (the hashing runs in threads and costs far less than the page build).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import EvidenceError
from ..evidence import ledger
from ..evidence.anchors import anchors_of
from ..evidence.archive import load_record, run_dir
from ..evidence.record import Measure as RecordedMeasure
from ..evidence.record import Record
from ..evidence.verify import verify_archive
from ..files import write_atomic
from .md import parse_time

CACHE_VERSION = 2  # 2: summaries name the runbooks a drill ran


@dataclass(frozen=True)
class Measure:
    name: str
    value: float
    unit: str
    objective: str | None
    objective_value: float | None
    verdict: str  # met | missed | recorded | no objective
    better: str = "lower"


@dataclass(frozen=True)
class RunSummary:
    """One run as the dashboard, the histories and the compliance matrix need it."""

    seq: int
    run_id: str
    drill: str
    env: str
    kind: str
    title: str
    status: str
    reason: str | None
    started_at: str | None
    finished_at: str | None
    dry_run: bool
    controls: tuple[str, ...]
    objectives: dict[str, float]
    measures: tuple[Measure, ...]
    has_html: bool
    readable: bool  # False when the bundle's record.json cannot be read (verify names why)
    runbooks: tuple[str, ...] = ()  # the runbooks a drill ran as sub-notebooks (from its attachments)

    @property
    def finished(self) -> datetime | None:
        return parse_time(self.finished_at)

    @property
    def counts_as_evidence(self) -> bool:
        """A passed, real run. A dry run changed nothing, so it proves no recovery."""
        return self.status == "passed" and not self.dry_run

    def objective_measures(self) -> list[Measure]:
        return [m for m in self.measures if m.objective is not None]


@dataclass
class VerifyState:
    """``drillbook verify`` at build time, per run and for the archive as a whole."""

    runs: int = 0
    archive_problems: list[str] = field(default_factory=list)
    run_problems: dict[str, list[str]] = field(default_factory=dict)
    checked: bool = False

    @property
    def ok(self) -> bool:
        return self.checked and not self.archive_problems and not self.run_problems

    def run_ok(self, run_id: str) -> bool:
        return self.checked and not self.archive_problems and run_id not in self.run_problems


@dataclass
class Archive:
    root: Path
    runs: list[RunSummary]  # ledger order (oldest first)
    entries: dict[str, dict[str, Any]]  # ledger entry by run id
    verify: VerifyState
    key_files: list[Path]
    resumed_by: dict[str, str] = field(default_factory=dict)  # run id → the run that resumed it (incidents.py)

    def by_name(self) -> dict[str, list[RunSummary]]:
        grouped: dict[str, list[RunSummary]] = {}
        for run in self.runs:
            grouped.setdefault(run.drill, []).append(run)
        return grouped


# --------------------------------------------------------------------------- cache
class Cache:
    """Summaries, chart digests and converted runbooks from earlier builds, in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"version": CACHE_VERSION, "summaries": {}, "charts": {}, "runbooks": {}}
        self._saved = ""
        try:
            text = path.read_text(encoding="utf-8")
            loaded = json.loads(text)
            if loaded.get("version") == CACHE_VERSION:
                self.data.update(loaded)
                self._saved = text
        except (OSError, ValueError, AttributeError):
            pass  # no cache or an unreadable one: rebuild it

    def section(self, name: str) -> dict[str, Any]:
        return self.data.setdefault(name, {})

    def save(self) -> None:
        # Compact JSON (the C encoder: indenting a 1,000-run cache costs a quarter of a second), and
        # no write at all when nothing changed.
        text = json.dumps(self.data, separators=(",", ":"))
        if text != self._saved:
            write_atomic(self.path, text, mode=0o644)
            self._saved = text


def cache_path(state: Path, archive: Path) -> Path:
    """One cache per archive, so publishing several archives from one checkout never mixes them."""
    tag = hashlib.sha256(str(archive.resolve()).encode()).hexdigest()[:12]
    return state / "site" / f"cache-{tag}.json"


# --------------------------------------------------------------------------- summaries
def _measure(raw: RecordedMeasure) -> Measure | None:
    value = raw.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    target = raw.get("objective_value")
    return Measure(str(raw.get("name", "")), float(value), str(raw.get("unit") or ""), raw.get("objective"),
                   float(target) if isinstance(target, (int, float)) else None,
                   str(raw.get("verdict") or "recorded"), str(raw.get("better") or "lower"))


def summarize(entry: dict[str, Any], record: Record | None, has_html: bool) -> RunSummary:
    """A run's summary from its record, or from the ledger entry alone when the record is unreadable."""
    rec = record or {}
    measures = tuple(m for m in (_measure(r) for r in rec.get("measures") or [] if isinstance(r, dict)) if m)
    objectives = {k: float(v) for k, v in (rec.get("objectives") or {}).items() if isinstance(v, (int, float))}
    return RunSummary(
        seq=int(entry.get("seq") or 0), run_id=str(entry["run_id"]),
        drill=str(rec.get("drill") or entry.get("drill") or "?"), env=str(rec.get("env") or entry.get("env") or "?"),
        kind=str(rec.get("kind") or entry.get("kind") or "notebook"),
        title=str(rec.get("title") or entry.get("drill") or entry["run_id"]),
        status=str(rec.get("status") or entry.get("status") or "error"), reason=rec.get("reason"),
        started_at=rec.get("started_at") or entry.get("started_at"),
        finished_at=rec.get("finished_at") or entry.get("finished_at") or entry.get("recorded_at"),
        dry_run=bool(rec.get("dry_run")), controls=tuple(str(c) for c in rec.get("controls") or []),
        objectives=objectives, measures=measures, has_html=has_html, readable=record is not None,
        runbooks=tuple(sorted({str(a).rsplit("/", 1)[-1].removesuffix(".ipynb") for a in rec.get("attachments") or []
                               if str(a).endswith(".ipynb")})),
    )


def _from_cache(raw: dict[str, Any]) -> RunSummary:
    raw = dict(raw)
    raw["controls"] = tuple(raw["controls"])
    raw["measures"] = tuple(Measure(**m) for m in raw["measures"])
    raw["runbooks"] = tuple(raw.get("runbooks") or ())
    return RunSummary(**raw)


def _load_summary(archive: Path, entry: dict[str, Any]) -> RunSummary:
    bundle = run_dir(archive, str(entry["run_id"]))
    try:
        record = load_record(archive, str(entry["run_id"]))
    except EvidenceError:
        record = None
    return summarize(entry, record, (bundle / "notebook.html").is_file())


def load_summaries(archive: Path, entries: list[dict[str, Any]], cache: Cache) -> list[RunSummary]:
    """Every ledger entry's summary: cached ones reused, new ones read from their record."""
    cached = cache.section("summaries")
    fresh: dict[str, Any] = {}
    runs = []
    for entry in entries:
        run_id = str(entry["run_id"])
        hit = cached.get(run_id)
        if hit and hit.get("manifest") == entry.get("manifest_sha256"):
            summary = _from_cache(hit["summary"])
            fresh[run_id] = hit
        else:
            summary = _load_summary(archive, entry)
            if summary.readable:  # an unreadable bundle is read again next time (it may be restored)
                fresh[run_id] = {"manifest": entry.get("manifest_sha256"), "summary": asdict(summary)}
        runs.append(summary)
    cache.data["summaries"] = fresh  # drops runs no longer in this ledger
    return runs


# --------------------------------------------------------------------------- verify
def verify(root: Path) -> VerifyState:
    report = verify_archive(root, anchors=anchors_of(root))  # held to the project's git anchors too
    state = VerifyState(runs=report.runs, checked=True)
    for problem in report.problems:
        if problem.run_id is None:
            state.archive_problems.append(problem.what)
        else:
            state.run_problems.setdefault(problem.run_id, []).append(problem.what)
    return state


def load_archive(root: Path, cache: Cache) -> Archive:
    """The archive as the site sees it; an archive that does not exist yet is simply empty."""
    if not root.exists():
        return Archive(root, [], {}, VerifyState(), [])
    entries = [e for e in ledger.read_entries(root) if "corrupt" not in e and "run_id" in e]
    runs = load_summaries(root, entries, cache)
    keys = sorted((root / "keys").glob("*.pem"))
    return Archive(root, runs, {str(e["run_id"]): e for e in entries}, verify(root), keys)


# --------------------------------------------------------------------------- selection
def full_page_runs(runs: list[RunSummary], per_drill: int) -> set[str]:
    """Runs that get a full evidence page; the rest are listed on their drill's history page.

    The latest ``per_drill`` runs of each drill, plus whatever another page links to: the latest
    run and the latest passing run of each drill on each environment. The set is bounded by the
    number of drills and environments, not by the size of the archive.
    """
    chosen: set[str] = set()
    per_name: dict[str, int] = {}
    latest: set[tuple[str, str]] = set()
    passing: set[tuple[str, str]] = set()
    for run in sorted((r for r in runs if r.readable), key=lambda r: r.seq, reverse=True):
        pair = (run.drill, run.env)
        if per_name.get(run.drill, 0) < per_drill:
            chosen.add(run.run_id)
        per_name[run.drill] = per_name.get(run.drill, 0) + 1
        if pair not in latest:
            latest.add(pair)
            chosen.add(run.run_id)
        if run.counts_as_evidence and pair not in passing:
            passing.add(pair)
            chosen.add(run.run_id)
    return chosen
