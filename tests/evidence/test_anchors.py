"""Anchors outside the archive: the published site's head and the `evidence-anchors` git branch.

One project per module: six runs written through the evidence API, one `drillbook anchor`, one real
`drillbook publish`; each test tampers with its own copy like a forger who holds the signing key.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
from dataclasses import dataclass
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import Project, cli
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from drillbook.evidence import keys, ledger
from evidencesupport import add_runs, drop_last, new_project
from sitesupport import QuietHandler, site_build

# The project's own trust file (module-wide archives are signed before any per-test one exists).
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("project_trust_file")]
GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@t"]


@dataclass
class Anchored:
    root: Path
    key: Ed25519PrivateKey
    runs: list[str]
    head_at_4: bytes  # the signed HEAD as it was after four runs
    site: Path
    before: dict[str, str]  # the repository's HEAD, branch and status before `drillbook anchor`

    def copy(self, target: Path) -> Project:
        shutil.copytree(self.root, target, symlinks=True)
        return Project(target)

    def public_key(self, folder: Path) -> Path:
        path = folder / "signer.pem"
        path.write_bytes(keys.public_pem(self.key.public_key()))
        return path


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *GIT_ID, *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def repo_state(root: Path) -> dict[str, str]:
    return {"head": git(root, "rev-parse", "HEAD"), "branch": git(root, "symbolic-ref", "HEAD"),
            "status": git(root, "status", "--porcelain"), "staged": git(root, "diff", "--cached", "--stat")}


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory) -> Anchored:
    base = tmp_path_factory.mktemp("anchors")
    root = site_build.make_project(base / "project")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "parameters")
    git(root, "commit", "-q", "-m", "project")
    archive = Project(root).archive
    key = Ed25519PrivateKey.generate()
    runs = add_runs(archive, 4, key=key, drill="failover_sim")
    head_at_4 = (archive / "HEAD").read_bytes()
    runs += add_runs(archive, 2, key=key, drill="failover_sim")
    before = repo_state(root)
    done = cli(root, "anchor")
    assert done.code == 0, done.output
    assert repo_state(root) == before  # same commit, same branch, same tree, nothing staged
    site = base / "site"
    published = cli(root, "publish", "--out", str(site))
    assert published.code == 0, published.output
    return Anchored(root, key, runs, head_at_4, site, before)


def test_anchor_commits_the_head_to_its_own_branch_and_touches_nothing_else(anchored: Anchored,
                                                                             tmp_path: Path) -> None:
    assert git(anchored.root, "rev-parse", "HEAD") == anchored.before["head"]
    assert git(anchored.root, "rev-list", "--count", "evidence-anchors") == "1"
    anchor = json.loads(git(anchored.root, "show", "evidence-anchors:anchor.json"))
    last = ledger.read_entries(Project(anchored.root).archive)[-1]
    assert (anchor["seq"], anchor["hash"], anchor["recorded_at"]) == (6, last["hash"], last["recorded_at"])
    project = anchored.copy(tmp_path / "copy")
    add_runs(project.archive, 1, key=anchored.key, drill="failover_sim")
    again = cli(project, "anchor")
    assert again.code == 0 and "anchored ledger seq 7" in again.stdout, again.output
    assert git(project.root, "rev-list", "--count", "evidence-anchors") == "2"
    assert git(project.root, "rev-parse", "evidence-anchors^") == git(anchored.root, "rev-parse", "evidence-anchors")
    assert git(project.root, "ls-tree", "--name-only", "evidence-anchors") == "anchor.json"
    checked = cli(project, "verify", "--anchors")
    assert checked.code == 0 and "held to 2 anchor(s)" in checked.stdout, checked.output


def test_publish_writes_the_head_it_saw_and_the_dashboard_shows_the_anchor(anchored: Anchored) -> None:
    seen = json.loads((anchored.site / "evidence" / "anchor.json").read_text())
    assert (seen["seq"], seen["hash"]) == (6, ledger.read_entries(Project(anchored.root).archive)[-1]["hash"])
    dashboard = (anchored.site / "status" / "index.html").read_text()
    assert "Anchored head" in dashboard and "#6" in dashboard and "evidence-anchors" in dashboard
    assert "still holds every anchored entry" in dashboard
    assert 'href="anchor.json"' in (anchored.site / "evidence" / "index.html").read_text()


def test_a_published_site_verifies_with_only_the_public_key(anchored: Anchored, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(anchored.site, site)
    published = sorted((site / "evidence" / "keys").glob("*.pem"))
    assert [p.stem for p in published] == [keys.key_id(anchored.key.public_key())]
    result = cli(tmp_path, "verify", "--archive", str(site), "--public-key", str(published[0]))
    assert result.code == 0, result.output
    assert "verify: published site with 6 run(s) (6 bundle(s) published)" in result.stdout
    victim = anchored.runs[2]
    record = site / "evidence" / "runs" / victim / "record.json"
    record.write_text(record.read_text().replace('"passed"', '"failed"'))
    tampered = cli(tmp_path, "verify", "--archive", str(site), "--public-key", str(published[0]))
    assert tampered.code == 1 and f"{victim}: modified: record.json changed" in tampered.stdout


def _outside(project: Project, tmp_path: Path) -> Path:
    """The archive copied out of its project: no trust file, no git anchors, only what is passed."""
    target = tmp_path / "loose-archive"
    shutil.copytree(project.archive, target)
    return target


def test_three_runs_removed_and_head_rewritten_are_named_against_the_site_and_git(anchored: Anchored,
                                                                                  tmp_path: Path) -> None:
    project = anchored.copy(tmp_path / "copy")
    drop_last(project.archive, 3, anchored.key)
    loose, key = _outside(project, tmp_path), str(anchored.public_key(tmp_path))
    assert cli(tmp_path, "verify", "--archive", str(loose), "--public-key", key).code == 0  # self-consistent
    missing = "sequence number(s) 4, 5, 6 missing"
    site = cli(tmp_path, "verify", "--archive", str(loose), "--public-key", key, "--against", str(anchored.site))
    assert site.code == 1 and missing in site.stdout and "anchor.json" in site.stdout, site.output
    against_git = cli(project, "verify", "--anchors")
    assert against_git.code == 1 and missing in against_git.stdout and "git evidence-anchors" in against_git.stdout
    plain = cli(project, "verify")  # the project's own archive: plain verify holds it to the git anchors too
    assert plain.code == 1 and missing in plain.stdout
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(anchored.site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        remote = cli(tmp_path, "verify", "--archive", str(loose), "--public-key", key, "--against", url)
    finally:
        server.shutdown()
        server.server_close()
    assert remote.code == 1 and missing in remote.stdout and url in remote.stdout, remote.output


def test_an_older_signed_head_put_back_is_caught_by_plain_verify(anchored: Anchored, tmp_path: Path) -> None:
    project = anchored.copy(tmp_path / "copy")
    drop_last(project.archive, 2, anchored.key)
    (project.archive / "HEAD").write_bytes(anchored.head_at_4)  # the genuine, signed HEAD of seq 4
    loose, key = _outside(project, tmp_path), str(anchored.public_key(tmp_path))
    assert cli(tmp_path, "verify", "--archive", str(loose), "--public-key", key).code == 0  # HEAD alone is fooled
    result = cli(project, "verify")
    assert result.code == 1, result.output
    assert "HEAD put back: it records seq 4" in result.stdout and "older than the anchor" in result.stdout
    assert "sequence number(s) 5, 6 missing" in result.stdout


def test_a_rewritten_history_is_named_at_the_anchored_entry(anchored: Anchored, tmp_path: Path) -> None:
    project = anchored.copy(tmp_path / "copy")
    drop_last(project.archive, 2, anchored.key)
    add_runs(project.archive, 2, key=anchored.key, drill="failover_sim")  # seq 5 and 6 again, other runs
    result = cli(project, "verify", "--anchors")
    assert result.code == 1
    assert "rewritten: ledger entry seq 6 is not the one anchored" in result.stdout


def test_anchor_outside_a_git_repository_is_refused_in_one_line(tmp_path: Path) -> None:
    project = new_project(tmp_path / "plain")
    add_runs(project.archive, 1)
    result = cli(project, "anchor", env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert result.code == 2 and "not a git repository" in result.stderr and "Traceback" not in result.output
    required = cli(project, "verify", "--anchors", env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert required.code == 2 and "no anchors on the evidence-anchors branch" in required.stderr


def test_plain_verify_leaves_another_ledgers_anchors_to_verify_anchors(anchored: Anchored, tmp_path: Path) -> None:
    project = anchored.copy(tmp_path / "copy")  # another checkout of the repository, with an archive of its own
    shutil.rmtree(project.archive)
    add_runs(project.archive, 2, key=anchored.key, drill="failover_sim")
    assert json.loads(git(project.root, "show", "evidence-anchors:anchor.json"))["genesis"] != \
        ledger.read_entries(project.archive)[0]["hash"]
    plain = cli(project, "verify")
    assert plain.code == 0 and "held to" not in plain.stdout, plain.output
    insisted = cli(project, "verify", "--anchors")
    assert insisted.code == 1 and "sequence number(s) 3, 4, 5, 6 missing" in insisted.stdout
    assert "rewritten from seq 1: the ledger's first entry is not the one anchored" in insisted.stdout
