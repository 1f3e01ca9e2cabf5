"""How long `drillbook publish` takes for archives of 100 and 1,000 runs (target: 1,000 < 3 × 100).

The archives are synthetic but real: each run goes through drillbook's own drill API (steps,
checks, measures judged against the environment's objectives), its record is completed by
``record.complete_record``, its notebook rendered by the runner's ``HtmlRenderer`` and the bundle
archived, hashed and signed by ``evidence.archive.record_run``. Only the kernel is skipped (a real run
costs seconds; see bench/run_overhead.py for that part).

For each size it times, with the real console script in a fresh process:
  cold     first publish of the archive (every page written, every run-time HTML copied)
  warm     publishing again with nothing new (every file already up to date)
  +1 run   publishing after one more run (what a scheduled publish after each drill costs)

    .venv/bin/python bench/site_build.py [--sizes 100 1000] [--full-runs 10] [--keep DIR]

The same helpers build the fixture archive of tests/site/test_site.py and tests/site/test_browser.py.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import nbformat
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from drillbook.config import catalog, environments
from drillbook.config.secrets import Redactor
from drillbook.drill import Drill
from drillbook.evidence import record
from drillbook.evidence.archive import record_run
from drillbook.runner.outcome import html_header
from drillbook.runner.render import HtmlRenderer

REPO = Path(__file__).resolve().parent.parent
DRILLBOOK = Path(sys.executable).parent / "drillbook"
GENERATED_DOCS = ("runbooks", "status", "evidence")

ENVIRONMENTS = {
    "local": "description: embedded lab\nhosts:\n  here:\n    shell: local\nobjectives:\n  rto_seconds: 30\n  rpo_seconds: 5\n",
    "staging": "description: staging pair\nhosts:\n  here:\n    shell: local\nobjectives:\n  rto_seconds: 20\n  rpo_seconds: 2\n",
}
SCHEDULE = "runs:\n  - drill: failover_sim\n    env: staging\n    cron: '0 3 * * *'\n    approve: [promote]\n"


# --------------------------------------------------------------------------- the project
def _meta(kind: str, title: str, objectives: list[str], controls: list[str], schedule: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"kind": kind, "title": title, "owner": "dba-oncall", "objectives": objectives,
                            "controls": controls, "tags": ["fixture"], "description": f"Fixture {kind}: {title}."}
    if schedule:
        meta["schedule"] = schedule
    return meta


def notebook(meta: dict[str, Any], intro: str, parameters: str, cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}, "drillbook": meta}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(intro), params] + [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


RUNNER_PARAMETERS = 'env = "local"\ndry_run = True\napprove = []\nrun_id = None\nchange = None\n'
START = "import drillbook\ndrill = drillbook.start(env=env, dry_run=dry_run, approve=approve, run_id=run_id, change=change)"

NOTEBOOKS = {
    "notebooks/drills/failover_sim.ipynb": notebook(
        _meta("drill", "Failover under load (simulated)", ["rto_seconds", "rpo_seconds"],
              ["SOC 2 CC7.5", "ISO 27001 A.5.30"], "0 3 * * 1"),
        "# Failover drill\n\nStop the primary, promote the standby, measure RTO and RPO.\n\n"
        "Recovery follows [the promote runbook](../../runbooks/promote.ipynb).\n\n## Steps\n\n"
        "```text\n# not a heading: inside a fence\n```\n",
        RUNNER_PARAMETERS + "rto = 1.5  # measured recovery time to report (s)\nrpo = 0.2  # data lost (s)\n",
        [START,
         'drill.step("Promote the standby", lambda: "promoted", mutating=True, gate="promote")',
         'drill.measure("rto_seconds", rto, objective="rto_seconds")\n'
         'drill.measure("rpo_seconds", rpo, objective="rpo_seconds")\n'
         'drill.check("writes accepted on the new primary", True, "first write after promote")',
         "drill.finish()"]),
    "notebooks/drills/restore_sim.ipynb": notebook(
        _meta("drill", "Restore from backup (simulated)", ["rto_seconds"], ["ISO 27001 A.8.13"], "@monthly"),
        "# Restore drill\n\nRestore last night's backup into a scratch instance and count rows.\n",
        RUNNER_PARAMETERS + "rto = 40.0\n",
        [START, 'drill.measure("rto_seconds", rto, objective="rto_seconds")', "drill.finish()"]),
    "runbooks/promote.ipynb": notebook(
        _meta("runbook", "Promote the standby", [], ["ISO 27001 A.5.30"], None),
        "# Promote the standby\n\n**When to use it.** The primary is down.\n\n"
        "See [the failover drill](../notebooks/drills/failover_sim.ipynb#steps), the "
        "[environments guide](../docs/guide/environments.md) and ![a diagram](diagram.png).\n",
        RUNNER_PARAMETERS,
        [START, 'drill.step("Promote", lambda: "ok", mutating=True, gate="promote")', "drill.finish()"]),
}


def make_project(root: Path) -> Path:
    """A drillbook project with two environments, two drills and a runbook, plus the real site sources."""
    for name, text in ENVIRONMENTS.items():
        path = root / "parameters" / "environments" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "parameters" / "schedule.yaml").write_text(SCHEDULE)
    for rel, nb in NOTEBOOKS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(root / rel))
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(REPO / "docs", root / "docs",
                    ignore=lambda folder, names: [n for n in names if Path(folder) == REPO / "docs" and n in GENERATED_DOCS])
    return root


# --------------------------------------------------------------------------- synthetic runs
@dataclass
class Writer:
    """Writes runs into ``archive`` through the drill API and ``evidence.archive.record_run``."""

    project: Path
    archive: Path
    key: Ed25519PrivateKey
    renderer: HtmlRenderer

    def run(self, drill: str, env_name: str, finished: datetime, *, rto: float, rpo: float | None = None,
            dry_run: bool = False, ok: bool = True, attachments: dict[str, str] | None = None) -> str:
        path, entry = catalog.find(drill, self.project)
        assert entry is not None
        env = environments.load_environment(env_name, self.project)
        run_id = f"{finished:%Y%m%dT%H%M%SZ}-{drill}-{env_name}-{os.urandom(3).hex()}"
        base = record.base_record(
            run_id=run_id, drill=drill, kind=entry.kind, title=entry.meta.title,
            notebook=path.relative_to(self.project).as_posix(), env=env,
            parameters={"env": env_name, "dry_run": dry_run, "rto": rto}, dry_run=dry_run, approve=["promote"],
            change=None, controls=list(entry.meta.controls), source=record.source_info(path, self.project), operator="bench@fixture")
        journal = self._journal(env, run_id, dry_run, rto, rpo, ok)
        done = record.complete_record(base, status=journal["status"], reason=journal["reason"], seconds=rto + 3,
                                      kernel_journal=journal, failing_cell=None, results=None)
        done["started_at"] = _iso(finished - timedelta(seconds=rto + 3))
        done["finished_at"] = _iso(finished)
        nb = nbformat.read(str(path), as_version=4)
        nb.cells.insert(0, nbformat.v4.new_markdown_cell("*Synthetic run: written through drillbook's evidence API "
                                                         "without a kernel (bench/site_build.py).*"))
        html = self.renderer.render(nb, html_header(done))
        with tempfile.TemporaryDirectory() as folder:
            for name, text in (attachments or {}).items():
                (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(folder) / name).write_text(text)
            done["attachments"] = sorted(attachments or {})
            record_run(self.archive, self.key, done, Redactor(), notebook=nb, html=html,
                                attachments=Path(folder))
        return run_id

    def _journal(self, env: Any, run_id: str, dry_run: bool, rto: float, rpo: float | None, ok: bool) -> dict[str, Any]:
        drill = Drill(env, dry_run=dry_run, approve=["promote"], run_id=run_id, change=None, run_dir=None,
                      project=self.project)
        with contextlib.redirect_stdout(io.StringIO()):  # the drill API narrates each step
            drill.step("Promote the standby", lambda: "promoted", mutating=True, gate="promote")
            if not dry_run:
                drill.measure("rto_seconds", rto, objective="rto_seconds")
                if rpo is not None:
                    drill.measure("rpo_seconds", rpo, objective="rpo_seconds")
            drill.check("writes accepted on the new primary", ok)
            drill._close("passed", None)  # what finish() does, minus gluing into a notebook we do not have
        return drill.data


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_history(writer: Writer, count: int, end: datetime, seed: int = 7) -> list[str]:
    """``count`` runs of failover_sim, alternating environments, one every 6 hours up to ``end``."""
    rng = random.Random(seed)
    ids = []
    for index in range(count):
        finished = end - timedelta(hours=6 * (count - 1 - index))
        env = ("local", "staging")[index % 2]
        rto = round(rng.uniform(4, 26 if env == "local" else 24), 2)
        ids.append(writer.run("failover_sim", env, finished, rto=rto, rpo=round(rng.uniform(0, 3), 2),
                              dry_run=index % 17 == 5, ok=index % 23 != 11))
    return ids


def new_writer(project: Path, archive: Path) -> Writer:
    return Writer(project, archive, Ed25519PrivateKey.generate(), HtmlRenderer())


# --------------------------------------------------------------------------- timing
@dataclass
class Timing:
    total: float  # the whole command, as a person or cron sees it
    generate: float  # drillbook's part: reading the archive, verify, writing pages and charts
    mkdocs: float  # mkdocs build --strict


def publish(project: Path, archive: Path, out: Path, full_runs: int) -> Timing:
    env = {**os.environ, "DRILLBOOK_PROJECT": str(project), "DRILLBOOK_STATE": str(project / ".drillbook")}
    t0 = time.perf_counter()
    done = subprocess.run([str(DRILLBOOK), "publish", "--archive", str(archive), "--out", str(out),
                           "--full-runs", str(full_runs)], cwd=project, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"publish failed:\n{done.stdout}{done.stderr}")
    split = re.search(r"in ([\d.]+) s; mkdocs build --strict in ([\d.]+) s", done.stderr)
    return Timing(elapsed, float(split.group(1)), float(split.group(2))) if split else Timing(elapsed, 0.0, 0.0)


def forget(project: Path) -> None:
    """Back to a first publish: no generated pages, no built site, no cache."""
    for folder in [*(project / "docs" / name for name in GENERATED_DOCS), project / "site", project / ".drillbook" / "site"]:
        shutil.rmtree(folder, ignore_errors=True)


def median(timings: list[Timing]) -> Timing:
    return sorted(timings, key=lambda t: t.total)[len(timings) // 2]


def bench(size: int, base: Path, full_runs: int, repeat: int) -> dict[str, Timing]:
    project = make_project(base / f"project-{size}")
    archive = project / "reports" / "evidence"
    writer = new_writer(project, archive)
    t0 = time.perf_counter()
    write_history(writer, size, datetime.now(timezone.utc) - timedelta(hours=1))
    print(f"  wrote {size} runs through the evidence API in {time.perf_counter() - t0:.1f} s", flush=True)
    out = project / "site"
    cold = []
    for _ in range(repeat):
        forget(project)
        cold.append(publish(project, archive, out, full_runs))
    warm = [publish(project, archive, out, full_runs) for _ in range(repeat)]
    plus_one = []
    for _ in range(repeat):
        writer.run("failover_sim", "local", datetime.now(timezone.utc), rto=5.0, rpo=0.5)
        plus_one.append(publish(project, archive, out, full_runs))
    figures = {"cold": median(cold), "warm": median(warm), "+1 run": median(plus_one)}
    pages = sum(1 for _ in (project / "docs" / "evidence" / "runs").glob("*/index.md"))
    print(f"  {size} runs ({pages} full evidence pages), median of {repeat}: "
          + ", ".join(f"{k} {v.total:.2f} s" for k, v in figures.items()), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--full-runs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="measurements per figure; the median is reported")
    parser.add_argument("--keep", type=Path, help="build under this folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="drillbook-site-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DRILLBOOK_HOME", str(base / "home"))
    results = {}
    try:
        for size in args.sizes:
            print(f"archive of {size} runs:", flush=True)
            results[size] = bench(size, base, args.full_runs, args.repeat)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nmedian of {args.repeat}, seconds      total   (drillbook + mkdocs build)")
    for size, figures in results.items():
        for what, t in figures.items():
            print(f"{size:>5} runs  {what:<8}  {t.total:8.2f}   ({t.generate:.2f} + {t.mkdocs:.2f})")
    if len(results) >= 2:
        small, large = min(results), max(results)
        for what in ("cold", "warm", "+1 run"):
            ratio = results[large][what].total / results[small][what].total
            print(f"{what}: {large} runs / {small} runs = {ratio:.2f}x (target < 3x)")


if __name__ == "__main__":
    main()
