"""The published site, end to end: a fixture archive, `drillbook publish` (real mkdocs --strict), and Zensical.

The archive is built honestly: 30 runs written through the drill API and ``evidence.archive.record_run`` with a
test signing key (bench/site_build.py's writer), then real runs through the real runner (papermill,
kernel, HTML rendered at run time) signed with the test's DRILLBOOK_HOME key: one passing, one missing
its RTO objective, one that tries to leak a secret. Each test publishes its own copy of that project.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import FIXTURES, REPO, cli
from drillbook.evidence import ledger
from drillbook.site import data as site_data
from drillbook.site import files as site_files
from drillbook.site import history as site_history
from drillbook.site import md as site_md
from drillbook.site import status as site_status
from sitesupport import site_build

# The project's own trust file (module-wide archives are signed before any per-test one exists).
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("project_trust_file")]

ZENSICAL = Path(sys.executable).parent / "zensical"
CANARY = "site-canary-7f3a9c"  # the secret the leaky run tries to publish
TOKEN = "site-token-51d2e8"
HISTORY_RUNS = 30


@dataclass
class FixtureSite:
    root: Path
    home: Path
    history: list[str]
    real: dict[str, str] = field(default_factory=dict)  # passed / failed / leaky → run id

    @property
    def archive(self) -> Path:
        return self.root / "reports" / "evidence"

    @property
    def env(self) -> dict[str, str]:
        return {"DRILLBOOK_HOME": str(self.home), "DRILLBOOK_SITE_CANARY": CANARY, "DRILLBOOK_TEST_TOKEN": TOKEN}

    def copy(self, target: Path) -> FixtureSite:
        shutil.copytree(self.root, target / "project", symlinks=True)
        shutil.copytree(self.home, target / "home")
        return FixtureSite(target / "project", target / "home", self.history, dict(self.real))

    def publish(self, *args: str) -> object:
        return cli(self.root, "publish", *args, env=self.env)

    def entries(self) -> list[dict]:
        return ledger.read_entries(self.archive)

    def record(self, run_id: str) -> dict:
        return json.loads((self.archive / "runs" / run_id / "record.json").read_text())

    def page(self, rel: str) -> str:
        return (self.root / "docs" / rel).read_text()


def _real_run(fixture: FixtureSite, *args: str, expect: int) -> str:
    result = cli(fixture.root, "run", *args, env=fixture.env)
    assert result.code == expect, result.output
    return Path(re.search(r"evidence: (\S+)", result.stdout).group(1)).name


def build_fixture(base: Path, real_runs: bool = True) -> FixtureSite:
    """The fixture project and archive (see the module docstring)."""
    root = site_build.make_project(base / "project")
    (root / "parameters" / "environments" / "vault.yaml").write_text(
        "description: holds a secret\nhosts:\n  here:\n    shell: local\nobjectives:\n  rto_seconds: 30\n"
        "secrets:\n  canary: env:DRILLBOOK_SITE_CANARY\n")
    shutil.copy(FIXTURES / "notebooks" / "leaks_secret.ipynb", root / "notebooks" / "drills" / "leaks_secret.ipynb")
    fixture = FixtureSite(root, base / "home", [])
    fixture.home.mkdir()
    writer = site_build.new_writer(root, fixture.archive)  # its own key: the archive ends up with two
    fixture.history = site_build.write_history(writer, HISTORY_RUNS, datetime.now(timezone.utc) - timedelta(days=2))
    if real_runs:
        # The first entry pinned the writer's key; the real runs sign with this home's key: pin it too.
        assert cli(fixture.root, "keys", "trust", env=fixture.env).code == 0
        fixture.real["passed"] = _real_run(fixture, "failover_sim", "--env", "local", "--approve", "promote",
                                           "-p", "rto=2.5", "-p", "rpo=0.1", expect=0)
        fixture.real["failed"] = _real_run(fixture, "failover_sim", "--env", "local", "--approve", "promote",
                                           "-p", "rto=99", expect=1)
        # The token reference is passed with -p so the runner resolves and scrubs it: a reference left
        # as a parameter default is resolved only inside the kernel, which the runner cannot scrub for.
        fixture.real["leaky"] = _real_run(fixture, "leaks_secret", "--env", "vault",
                                          "-p", "token_ref=env:DRILLBOOK_TEST_TOKEN", expect=1)
    return fixture


@pytest.fixture(scope="module")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> FixtureSite:
    return build_fixture(tmp_path_factory.mktemp("site-fixture"))


@pytest.fixture
def site(fixture_site: FixtureSite, tmp_path: Path) -> FixtureSite:
    """A private copy of the fixture project, so a test may publish, tamper and break it freely."""
    return fixture_site.copy(tmp_path)


@pytest.fixture(scope="module")
def published(fixture_site: FixtureSite, tmp_path_factory: pytest.TempPathFactory) -> FixtureSite:
    """One copy published with --full-runs 3, shared by the tests that only read pages."""
    copy = fixture_site.copy(tmp_path_factory.mktemp("site-published"))
    result = copy.publish("--full-runs", "3")
    assert result.code == 0, result.output
    return copy


def expected_full_pages(fixture: FixtureSite, per_drill: int) -> set[str]:
    """The documented rule, recomputed from the ledger and the records."""
    chosen, counts, latest, passing = set(), {}, set(), set()
    for entry in reversed(fixture.entries()):
        rec = fixture.record(entry["run_id"])
        pair = (rec["drill"], rec["env"])
        if counts.get(rec["drill"], 0) < per_drill:
            chosen.add(entry["run_id"])
        counts[rec["drill"]] = counts.get(rec["drill"], 0) + 1
        if pair not in latest:
            latest.add(pair)
            chosen.add(entry["run_id"])
        if rec["status"] == "passed" and not rec["dry_run"] and pair not in passing:
            passing.add(pair)
            chosen.add(entry["run_id"])
    return chosen


def full_pages(fixture: FixtureSite) -> set[str]:
    return {p.parent.name for p in (fixture.root / "docs" / "evidence" / "runs").glob("*/index.md")}


def table_row(markdown: str, *needles: str) -> str:
    rows = [line for line in markdown.splitlines() if line.startswith("|") and all(n in line for n in needles)]
    assert len(rows) == 1, (needles, rows)
    return rows[0]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------- publish and the pages
def test_publish_builds_the_site_and_prints_the_page_to_open(published: FixtureSite) -> None:
    index = published.root / "site" / "index.html"
    assert index.is_file()
    for page in ("status/index.html", "status/compliance/index.html", "runbooks/failover_sim/index.html",
                 "status/history/failover_sim/index.html", "evidence/index.html", "audit/verifying-evidence/index.html"):
        assert (published.root / "site" / page).is_file(), page
    assert (published.root / "docs" / "status" / ".drillbook-generated").is_file()


def test_publish_output_names_the_index(site: FixtureSite) -> None:
    result = site.publish("--full-runs", "3")
    assert result.code == 0, result.output
    assert f"site: open {site.root / 'site' / 'index.html'}" in result.stdout
    assert re.search(r"for 33 run\(s\), \d+ with a full page", result.stderr), result.stderr


def test_dashboard_shows_latest_status_due_dates_and_measures_against_objectives(published: FixtureSite) -> None:
    page = published.page("status/index.md")
    failed = published.record(published.real["failed"])
    local = table_row(page, "<code>failover_sim</code>", "| local |")
    assert "db-failed" in local and "rto\\_seconds 99 s ≤ 30" in local and "missed" in local
    assert published.real["failed"] in local  # links the latest run's evidence page
    assert "on demand" in local  # schedule.yaml lists failover_sim for staging only
    assert site_md.when(failed["finished_at"]) in local
    staging = table_row(page, "<code>failover_sim</code>", "| staging |")
    assert "overdue" in staging and "(schedule.yaml)" in staging  # daily cron, last run two days ago
    never = table_row(page, "<code>restore_sim</code>")
    assert "never run" in never and "@monthly" in never
    assert "3 overdue" not in page and "2 overdue" in page  # staging + restore_sim; local is on demand
    assert "Evidence verified at build time" in page


def test_history_lists_every_run_and_draws_charts(published: FixtureSite) -> None:
    page = published.page("status/history/failover_sim.md")
    runs = [e for e in published.entries() if e["drill"] == "failover_sim"]
    rows = [line for line in page.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(r.split("|")[1]) for r in rows] == [e["seq"] for e in reversed(runs)]  # fewer than 50: all
    linked_pages = sum("[record](" in r for r in rows)
    linked_html = sum("[notebook](" in r for r in rows)
    assert linked_pages + linked_html == len(runs) and linked_html > 0  # older runs: their run-time HTML
    assert f"[all {len(runs)} runs](failover_sim-runs.html)" in page
    every = (published.root / "site" / "status" / "history" / "failover_sim-runs.html").read_text()
    assert every.count("<tr><td>") == len(runs)
    hrefs = re.findall(r'href="([^"]+)"', every)
    assert len(hrefs) > len(runs)
    for href in hrefs:  # every link of the static table lands on a built file
        target = (published.root / "site" / "status" / "history" / href).resolve()
        assert (target / "index.html" if href.endswith("/") else target).is_file(), href
    for what in ("measures", "outcomes"):
        assert f"failover_sim-{what}.png" in page
        width, height = png_size(published.root / "docs" / "status" / "history" / f"failover_sim-{what}.png")
        assert width >= 600 and height >= 100
    leaky = published.page("status/history/leaks_secret.md")
    assert "leaks_secret-outcomes.png" in leaky and "db-error" in leaky


def test_full_evidence_pages_follow_the_rule_and_every_run_html_is_copied_unchanged(published: FixtureSite) -> None:
    assert full_pages(published) == expected_full_pages(published, 3)
    for entry in published.entries():
        copied = published.root / "docs" / "evidence" / "html" / f"{entry['run_id']}.html"
        original = published.archive / "runs" / entry["run_id"] / "notebook.html"
        assert copied.read_bytes() == original.read_bytes(), entry["run_id"]  # never re-rendered


def test_evidence_page_shows_record_hashes_ledger_entry_and_verify_result(published: FixtureSite) -> None:
    run_id = published.real["failed"]
    page = published.page(f"evidence/runs/{run_id}/index.md")
    bundle = published.archive / "runs" / run_id
    assert "verify passes for this run" in page
    assert "objective missed: rto\\_seconds" in page and "Failing cell" in page
    for line in (bundle / "MANIFEST").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
        assert f"<code>{digest}</code> | [{name}]({name})" in page
    entry = next(e for e in published.entries() if e["run_id"] == run_id)
    assert entry["hash"] in page and entry["sig"] in page and entry["manifest_sha256"] in page
    assert '<iframe class="db-notebook" src="notebook.html"' in page
    published_manifest = published.root / "docs" / "evidence" / "runs" / run_id / "MANIFEST"
    assert published_manifest.read_bytes() == (bundle / "MANIFEST").read_bytes()
    keys = sorted(p.name for p in (published.root / "docs" / "evidence" / "keys").glob("*.pem"))
    assert keys == sorted(p.name for p in (published.archive / "keys").glob("*.pem")) and len(keys) == 2


def test_compliance_matrix_names_controls_drills_and_latest_passing_evidence(published: FixtureSite) -> None:
    page = published.page("status/compliance.md")
    passed = published.record(published.real["passed"])
    soc2 = table_row(page, "SOC 2 CC7.5")
    assert "<code>failover_sim</code>" in soc2 and site_md.when(passed["finished_at"]) in soc2
    assert published.real["passed"] in soc2  # the latest passing run, not the later failed one
    assert len([line for line in page.splitlines() if line.startswith("| ISO 27001 A.5.30 |")]) == 2
    assert "1 control(s) without passing evidence" in page
    backup = table_row(page, "ISO 27001 A.8.13")
    assert "none" in backup and "<code>restore_sim</code>" in backup


def test_runbook_pages_are_the_notebooks_converted_without_outputs(published: FixtureSite) -> None:
    drill = published.page("runbooks/failover_sim.md")
    # The page's <title> comes from the front matter (escaped there), its heading from the notebook's title.
    assert drill.startswith('---\n"title": "Failover under load (simulated)"\n---\n\n# Failover under load (simulated)\n')
    assert '```python\ndrill.measure("rto_seconds", rto, objective="rto_seconds")' in drill
    assert "\n## Failover drill" in drill and "\n### Steps" in drill  # headings moved under the page title
    assert "# not a heading: inside a fence" in drill and "\n## not a heading" not in drill
    assert "<code>rto_seconds</code> (local 30, staging 20, vault 30)" in drill
    assert "[the promote runbook](promote.md)" in drill
    assert published.real["failed"] in drill  # latest evidence on local
    runbook = published.page("runbooks/promote.md")
    assert "[the failover drill](failover_sim.md)" in runbook
    assert "[environments guide](../guide/environments.md)" in runbook
    assert "a diagram (`diagram.png`)" in runbook  # a link the site cannot serve becomes text
    executed = json.loads((published.archive / "runs" / published.real["passed"] / "notebook.ipynb").read_text())
    outputs = json.dumps([c.get("outputs") for c in executed["cells"]], ensure_ascii=False)
    assert "▶ Promote the standby" in outputs and "▶" not in drill  # outputs are evidence, not procedure


def test_no_secret_reaches_the_site(published: FixtureSite) -> None:
    leaky = published.real["leaky"]
    html = (published.root / "site" / "evidence" / "runs" / leaky / "index.html").read_text()
    assert "[REDACTED:canary]" in html  # the step title, check name and traceback all held it
    for folder in (published.root / "site", published.root / "docs"):
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert CANARY.encode() not in data and TOKEN.encode() not in data, path


def test_mkdocs_and_zensical_build_the_same_tree(site: FixtureSite) -> None:
    result = site.publish("--full-runs", "3", "--out", str(site.root / "site-mkdocs"))
    assert result.code == 0, result.output
    zensical = subprocess.run([str(ZENSICAL), "build", "--strict", "-f", "mkdocs.yml"], cwd=site.root,
                              capture_output=True, text=True, timeout=120)
    assert zensical.returncode == 0, zensical.stdout + zensical.stderr
    run_id = site.real["failed"]
    key = next((site.archive / "keys").glob("*.pem")).name
    key_pages = ["index.html", "status/index.html", "status/compliance/index.html", "status/history/index.html",
                 "status/history/failover_sim/index.html", "status/history/failover_sim-measures.png",
                 "runbooks/index.html", "runbooks/failover_sim/index.html", "evidence/index.html",
                 f"evidence/runs/{run_id}/index.html", f"evidence/runs/{run_id}/notebook.html",
                 f"evidence/html/{site.history[0]}.html", "status/history/failover_sim-runs.html",
                 f"evidence/keys/{key}", "evidence/ledger.jsonl",
                 "guide/getting-started/index.html", "audit/verifying-evidence/index.html"]
    for built in (site.root / "site-mkdocs", site.root / "site"):
        for page in key_pages:
            assert (built / page).is_file(), (built.name, page)
        dashboard = (built / "status" / "index.html").read_text()
        assert "db-badge db-failed" in dashboard and ">overdue<" in dashboard
        evidence = (built / "evidence" / "runs" / run_id / "index.html").read_text()
        assert "verify passes for this run" in evidence and 'src="notebook.html"' in evidence


# --------------------------------------------------------------------------- cost: only what changed
def test_rebuild_touches_only_what_changed_and_prunes_pages_that_fall_out(site: FixtureSite) -> None:
    assert site.publish("--full-runs", "1").code == 0
    html = site.root / "docs" / "evidence" / "html" / f"{site.history[0]}.html"
    mtime = html.stat().st_mtime_ns
    again = site.publish("--full-runs", "1")
    assert again.code == 0, again.output
    # Only the dashboard may change (its "as of" time and ages); nothing is copied or removed.
    assert re.search(r"\(([01]) written, 0 copied, 0 removed\)", again.stderr), again.stderr
    before = full_pages(site)
    writer = site_build.Writer(site.root, site.archive, site_build.Ed25519PrivateKey.generate(),
                               site_build.HtmlRenderer())
    new_run = writer.run("failover_sim", "local", datetime.now(timezone.utc), rto=3.0, rpo=0.2)
    after_run = site.publish("--full-runs", "1")
    assert after_run.code == 0, after_run.output
    copied = int(re.search(r"(\d+) copied", after_run.stderr).group(1))
    assert copied == 8  # the new bundle's 4 files, its HTML, ledger.jsonl, HEAD, the new key: not the archive
    assert new_run in full_pages(site) and full_pages(site) == expected_full_pages(site, 1)
    gone = before - full_pages(site)
    assert gone == {site.real["passed"], site.real["failed"]}  # no longer the latest (passing) run on local
    for run_id in gone:
        assert not (site.root / "docs" / "evidence" / "runs" / run_id).exists()
        assert (site.root / "docs" / "evidence" / "html" / f"{run_id}.html").is_file()  # still listed and linked
    assert html.stat().st_mtime_ns == mtime  # an unchanged copy is left alone


def test_attachments_are_published_as_files_never_as_pages(site: FixtureSite) -> None:
    writer = site_build.Writer(site.root, site.archive, site_build.Ed25519PrivateKey.generate(),
                               site_build.HtmlRenderer())
    run_id = writer.run("failover_sim", "local", datetime.now(timezone.utc), rto=3.0, rpo=0.2, attachments={
        "report.md": "# Not a page\n\n[a link MkDocs would reject](nowhere.md)\n",
        "logs/promote.log": "promoted at 12:00:01\n"})
    result = site.publish("--full-runs", "1")
    assert result.code == 0, result.output  # a Markdown attachment built as a page would fail --strict
    folder = site.root / "site" / "evidence" / "runs" / run_id
    assert (folder / "attachments" / "report.md.txt").read_text().startswith("# Not a page")
    assert (folder / "attachments" / "logs" / "promote.log").is_file()
    assert not (folder / "attachments" / "report").exists()
    page = site.page(f"evidence/runs/{run_id}/index.md")
    assert "[attachments/report.md](attachments/report.md.txt)" in page
    assert "[attachments/logs/promote.log](attachments/logs/promote.log)" in page


# --------------------------------------------------------------------------- problems shown, not hidden
def test_tampered_run_is_published_as_failing_verification(site: FixtureSite) -> None:
    run_id = site.real["passed"]
    with open(site.archive / "runs" / run_id / "record.json", "a") as handle:
        handle.write(" ")
    result = site.publish("--full-runs", "3")
    assert result.code == 0, result.output
    assert "verify found problems" in result.stderr
    page = site.page(f"evidence/runs/{run_id}/index.md")
    assert "verify fails for this run" in page and "record.json changed" in page
    assert "Verification found 1 problem(s)" in site.page("status/index.md")
    assert "drillbook verify fails" in site.page("evidence/index.md")


def test_verification_script_in_the_docs_checks_the_archive_independently(published: FixtureSite, tmp_path: Path) -> None:
    text = (REPO / "docs" / "audit" / "verifying-evidence.md").read_text()
    script = tmp_path / "verify_archive.py"
    script.write_text(re.search(r"<!-- verify-script -->\n```python\n(.*?)```", text, re.S).group(1))
    keys = [str(p) for p in (published.root / "site" / "evidence" / "keys").glob("*.pem")]  # as published
    ok = subprocess.run([sys.executable, str(script), str(published.archive), *keys], capture_output=True, text=True)
    assert ok.returncode == 0 and "33 entries checked: OK" in ok.stdout, ok.stdout + ok.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(published.archive, tampered)
    victim = published.history[4]
    (tampered / "runs" / victim / "notebook.html").write_text("<p>nothing happened</p>")
    bad = subprocess.run([sys.executable, str(script), str(tampered), *keys], capture_output=True, text=True)
    assert bad.returncode == 1 and f"{victim}: notebook.html changed" in bad.stdout
    lines = (tampered / "ledger.jsonl").read_text().splitlines(keepends=True)
    (tampered / "ledger.jsonl").write_text("".join(lines[:-1]))
    cut = subprocess.run([sys.executable, str(script), str(tampered), *keys], capture_output=True, text=True)
    assert "truncated or altered" in cut.stdout and "added outside the ledger" in cut.stdout


# --------------------------------------------------------------------------- refusals
def test_refuses_to_delete_pages_it_did_not_generate(site: FixtureSite) -> None:
    mine = site.root / "docs" / "evidence" / "notes.md"
    mine.parent.mkdir(parents=True)
    mine.write_text("# My notes\n")
    result = site.publish()
    assert result.code == 2
    assert "holds files drillbook did not generate" in result.stderr and "hint:" in result.stderr
    assert mine.read_text() == "# My notes\n"


def test_refuses_an_output_folder_mkdocs_would_wipe(site: FixtureSite) -> None:
    result = site.publish("--out", str(site.root))
    assert result.code == 2 and "refusing to build the site into" in result.stderr
    assert (site.root / "parameters").is_dir()
    assert site.publish("--full-runs", "-1").code == 2
    missing = site.publish("--archive", str(site.root / "no-such-archive"))
    assert missing.code == 2 and "no evidence archive at" in missing.stderr


def test_strict_build_failure_names_the_broken_page(site: FixtureSite) -> None:
    guide = site.root / "docs" / "guide" / "getting-started.md"
    guide.write_text(guide.read_text() + "\nSee [the missing page](missing.md).\n")
    result = site.publish()
    assert result.code == 1
    assert "mkdocs build --strict failed" in result.stderr and "missing.md" in result.stderr


def test_publishes_a_project_with_no_runs_yet(tmp_path: Path) -> None:
    root = site_build.make_project(tmp_path / "project")
    result = cli(root, "publish")
    assert result.code == 0, result.output
    page = (root / "docs" / "status" / "index.md").read_text()
    assert "No evidence yet" in page and "never run" in table_row(page, "<code>restore_sim</code>")
    assert "No runs yet" in (root / "docs" / "status" / "history" / "index.md").read_text()


# --------------------------------------------------------------------------- units
def test_markdown_escaping_keeps_record_text_inert() -> None:
    assert site_md.esc("a|b *c* <script>") == "a\\|b \\*c\\* &lt;script&gt;"
    assert site_md.esc("[REDACTED:x]") == "\\[REDACTED:x\\]"
    assert site_md.slug("index") == "index_" and site_md.rel("status/index.md", "evidence/index.md") == "../evidence/index.md"


def test_due_is_the_next_firing_after_the_latest_run() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
    daily = site_status.due("0 3 * * *", "schedule.yaml", now - timedelta(hours=5), now)
    assert not daily.overdue and daily.due_at == datetime(2026, 3, 11, 3, 0, tzinfo=timezone.utc)
    late = site_status.due("0 3 * * *", "schedule.yaml", now - timedelta(days=2), now)
    assert late.overdue and late.due_at == datetime(2026, 3, 9, 3, 0, tzinfo=timezone.utc)
    assert site_status.due("@monthly", "metadata", None, now).overdue  # never run
    assert not site_status.due(None, None, None, now).overdue  # on demand


def _summary(seq: int, drill: str, env: str, status: str = "passed", dry: bool = False) -> site_data.RunSummary:
    finished = f"2026-01-01T00:{seq // 60 % 60:02d}:{seq % 60:02d}.000Z"
    return site_data.RunSummary(seq, f"r{seq}", drill, env, "drill", drill, status, None, None, finished, dry, (), {},
                                (), True, True)


def test_history_page_stays_the_same_size_as_the_archive_grows(tmp_path: Path) -> None:
    runs = [_summary(i, "a", "dev") for i in range(1, 301)]
    archive = site_data.Archive(tmp_path, runs, {}, site_data.VerifyState(), [])
    tree = site_files.PageTree(tmp_path / "docs")
    site_history.write_history(tree, archive, {}, site_data.Cache(tmp_path / "cache.json"))
    page = (tmp_path / "docs" / "status" / "history" / "a.md").read_text()
    rows = [line for line in page.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(r.split("|")[1]) for r in rows] == list(range(300, 250, -1))  # the latest 50
    every = (tmp_path / "docs" / "status" / "history" / "a-runs.html").read_text()
    assert every.count("<tr><td>") == 300 and "[all 300 runs](a-runs.html)" in page


def test_full_page_selection_is_bounded_by_drills_not_archive_size() -> None:
    runs = [_summary(i, "a", "prod" if i % 2 else "dev") for i in range(1, 1001)]
    runs.append(_summary(1001, "a", "prod", status="failed"))
    runs.append(_summary(1002, "b", "dev", dry=True))
    chosen = site_data.full_page_runs(runs, 2)
    # a: latest two (1001, 1000) + latest passing on prod (999); b: its only run
    assert chosen == {"r1001", "r1000", "r999", "r1002"}
    assert site_data.full_page_runs(runs, 0) == chosen  # 1000 is dev's latest and latest passing anyway
