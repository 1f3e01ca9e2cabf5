"""The published site: Markdown pages generated from the catalog and the archive, built by MkDocs.

    generate()  write docs/runbooks/, docs/status/ and docs/evidence/ (git-ignored, owned by publish)
    build()     mkdocs build --strict into site/ (or --out)
    publish()   both; serve() generates, then runs mkdocs serve for a live preview

Nothing essential depends on a plugin: pages are plain Markdown, charts are PNG files and each
run's notebook is the HTML rendered at run time, so Zensical builds the same tree. Modules of
the package: ``data`` (archive → summaries, verify, which runs get full pages), ``files`` (write
only what changed), ``runbooks``, ``evidence``, ``history`` + ``charts``, ``runs_table``,
``status`` (dashboard, compliance matrix), ``incidents``, ``md`` and ``paths`` (helpers).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import paths
from ..config import catalog, schedule
from ..errors import ConfigError, DrillbookError
from ..evidence.freshness import last_drills
from .anchoring import anchor_note
from .data import Cache, cache_path, full_page_runs, load_archive
from .evidence import write_evidence
from .files import GENERATED, PageTree, TreeStats
from .history import write_history
from .incidents import incidents, incidents_page, open_incidents, page_runs, resumed_by, run_parts
from .paths import COMPLIANCE, DASHBOARD, INCIDENTS
from .runbooks import write_runbooks
from .status import compliance_page, dashboard_page, dashboard_rows

DEFAULT_FULL_RUNS = 10
CONFIG_NAME = "mkdocs.yml"
DOCS_NAME = "docs"


class SiteBuildFailed(DrillbookError):
    """``mkdocs build --strict`` reported a problem (a broken link, a missing page, …)."""

    exit_code = 1


@dataclass
class Generated:
    stats: TreeStats
    runs: int
    full_pages: int
    verified: bool
    seconds: float


@dataclass
class Published:
    out: Path
    generated: Generated
    build_seconds: float

    @property
    def index(self) -> Path:
        return self.out / "index.html"


def validate_project(project: Path) -> tuple[Path, Path]:
    """``mkdocs.yml`` and ``docs/`` of the project, or a ConfigError saying what is missing."""
    config, docs = project / CONFIG_NAME, project / DOCS_NAME
    if not config.is_file():
        raise ConfigError(f"no {CONFIG_NAME} in {project}", "publish from a drillbook checkout (it ships mkdocs.yml)")
    if not docs.is_dir():
        raise ConfigError(f"no {DOCS_NAME}/ folder in {project}", "restore docs/ from the checkout")
    return config, docs


def _catalog(project: Path) -> tuple[list[catalog.Entry], list[str]]:
    """Valid notebooks, and the names of those left out because they fail validation (lint says why)."""
    entries = catalog.load_catalog(project, strict=False)
    names = {e.name for e in entries}
    return entries, [p.stem for p in catalog.notebook_paths(project) if p.stem not in names]


def generate(project: Path, archive: Path, full_runs: int = DEFAULT_FULL_RUNS, now: datetime | None = None,
             state: Path | None = None) -> Generated:
    """Write the generated pages into ``docs/``; only files whose content changed are touched."""
    if full_runs < 0:
        raise ConfigError(f"--full-runs must be 0 or more, got {full_runs}", "e.g. --full-runs 10")
    t0 = time.monotonic()
    _, docs = validate_project(project)
    now = now or datetime.now(timezone.utc)
    cache = Cache(cache_path(state or paths.state_dir(project), archive))
    tree = PageTree(docs)
    entries, skipped = _catalog(project)
    plan = schedule.load_schedule(project)
    data = load_archive(archive, cache)
    catalogued = {e.name for e in entries}
    parts = run_parts(data, cache)
    found = incidents(parts, project)
    full = full_page_runs(data.runs, full_runs) | page_runs(found)
    # Run pages link a resumed run and the run that resumed it, when both have a page.
    data.resumed_by = {a: b for a, b in resumed_by(parts).items() if a in full and b in full}
    # Evidence first: the other pages link to a run's page only if it was written.
    pages = write_evidence(tree, data, full, catalogued)
    write_history(tree, data, {e.name: e for e in entries}, cache)
    fresh = last_drills(archive, {e.name: e.path for e in entries if e.kind == "runbook"})
    write_runbooks(tree, project, entries, skipped, data, pages, plan, cache, fresh)
    rows = dashboard_rows(entries, plan, data, now)
    tree.write(INCIDENTS, incidents_page(found, pages, {r.run_id for r in data.runs if r.has_html}, now))
    tree.write(DASHBOARD, dashboard_page(rows, data, catalogued, pages, now, open_incidents(found, DASHBOARD))
               + anchor_note(data))
    tree.write(COMPLIANCE, compliance_page(entries, rows, data, pages, fresh))
    stats = tree.prune()
    cache.save()
    return Generated(stats, len(data.runs), len(pages), data.verify.ok, time.monotonic() - t0)


def _check_out(out: Path, project: Path, archive: Path) -> None:
    """MkDocs empties its output folder first: never let that be a folder holding anything else."""
    out = out.resolve()
    for precious in (project.resolve(), (project / DOCS_NAME).resolve(), archive.resolve()):
        if out == precious or precious.is_relative_to(out) or out.is_relative_to(project.resolve() / DOCS_NAME):
            raise ConfigError(f"refusing to build the site into {out}: it would overwrite {precious}",
                              "pass --out a new or empty folder, e.g. --out site")
    if out.is_dir() and any(out.iterdir()) and not (out / "index.html").is_file():
        raise ConfigError(f"refusing to build the site into {out}: it is not empty and holds no built site",
                          "pass --out a new or empty folder (MkDocs deletes what the folder holds)")


def _mkdocs(*args: str) -> list[str]:
    return [sys.executable, "-m", "mkdocs", *args]


def _quiet_env() -> dict[str, str]:
    # Material prints a banner about its end of life on every build; the site already builds with Zensical.
    return {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def build(project: Path, out: Path) -> float:
    """``mkdocs build --strict``; raises SiteBuildFailed with MkDocs' warnings."""
    config, _ = validate_project(project)
    t0 = time.monotonic()
    done = subprocess.run(_mkdocs("build", "--strict", "--config-file", str(config), "--site-dir", str(out)),
                          cwd=project, capture_output=True, text=True, env=_quiet_env())
    if done.returncode != 0:
        lines = (done.stderr + done.stdout).splitlines()
        problems = [line.split("-", 1)[-1].strip() for line in lines if line.startswith(("WARNING", "ERROR"))]
        problems = problems or [line for line in lines if line.strip()][-1:] or ["no output"]
        raise SiteBuildFailed(
            f"mkdocs build --strict failed ({len(problems)} problem(s)): {'; '.join(problems[:3])}",
            "fix the hand-written page or mkdocs.yml it names (generated pages are rewritten by every publish); "
            "run `mkdocs build --strict` to see everything",
        )
    return time.monotonic() - t0


def publish(project: Path, archive: Path, out: Path | None = None, full_runs: int = DEFAULT_FULL_RUNS,
            now: datetime | None = None) -> Published:
    target = (out or project / "site").resolve()
    _check_out(target, project, archive)
    generated = generate(project, archive, full_runs, now)
    return Published(target, generated, build(project, target))


def serve(project: Path, archive: Path, full_runs: int = DEFAULT_FULL_RUNS, dev_addr: str | None = None) -> int:
    """Generate the pages, then hand over to ``mkdocs serve`` (live reload of hand-written pages)."""
    config, _ = validate_project(project)
    generate(project, archive, full_runs)
    extra = ["--dev-addr", dev_addr] if dev_addr else []
    return subprocess.call(_mkdocs("serve", "--strict", "--config-file", str(config), *extra), cwd=project,
                           env=_quiet_env())


__all__ = ["DEFAULT_FULL_RUNS", "GENERATED", "Generated", "Published", "SiteBuildFailed", "build", "generate",
           "publish", "serve"]
