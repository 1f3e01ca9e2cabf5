"""Four-eyes approvals bound to a dry run's plan: `drillbook approve`, then `drillbook run --approval`.

One module project: a production environment whose access lists alice and bob, one real dry run of a
gated notebook, and approvals by alice (valid), by bob (the operator), by an unlisted key and an expired
one. Each refusal runs the real CLI on a copy and proves that nothing ran; one approved run goes through.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from approvalsupport import approve, approver_key, dry_run, production
from conftest import Project, cli
from drillbook.config.environments import load_environment
from drillbook.evidence import approvals, ledger, trust

# The project's own trust file (module-wide archives are signed before any per-test one exists).
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("project_trust_file")]


@dataclass
class Approved:
    root: Path
    env: dict[str, str]  # the signing key's home: every command signs with the same key
    marker: Path
    ids: dict[str, str]  # alice, bob, carol (unlisted), expired
    dry: str

    def copy(self, target: Path) -> Project:
        shutil.copytree(self.root, target)
        return Project(target)


@pytest.fixture(scope="module")
def approved(tmp_path_factory: pytest.TempPathFactory) -> Approved:
    base = tmp_path_factory.mktemp("approvals")
    project = Project(base / "project")
    (project.root / "parameters" / "environments").mkdir(parents=True)
    env = {"DRILLBOOK_HOME": str(base / "home")}
    keys = production(project, base)
    marker = base / "promoted"  # outside the project: copies share it, so it proves what ran
    dry = dry_run(project, "-p", f"marker_path={marker}", env=env)
    ids = {name: approve(project, dry, keys[name], env=env) for name in ("alice", "bob")}
    ids["carol"] = approve(project, dry, approver_key(project, base, "carol", listed=False), env=env)
    prod = load_environment("prod", project.root)
    past = datetime.now(timezone.utc) - timedelta(hours=5)
    import os

    saved = os.environ.get("DRILLBOOK_HOME")
    os.environ["DRILLBOOK_HOME"] = env["DRILLBOOK_HOME"]
    try:
        doc, _ = approvals.approve(project.archive, project.root, prod, dry, "promote",
                                   approvals.signer(keys["alice"], None), timedelta(hours=4), now=past)
    finally:
        os.environ["DRILLBOOK_HOME"] = saved or ""
    ids["expired"] = doc["id"]
    return Approved(project.root, env, marker, ids, dry)


def _run(project: Project, approved: Approved, *args: str, operator: str = "bob", marker: Path | None = None):
    return cli(project, "run", "gated", "--env", "prod", "--change", "CHG-7", *args,
               "-p", f"marker_path={marker or approved.marker}", env={**approved.env, "DRILLBOOK_OPERATOR": operator})


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


REFUSALS = {
    "no approval": (None, "bob", None, "environment 'prod' requires an approval for a real run"),
    "by the operator": ("bob", "bob", None, "was given by bob, the operator of this run"),
    "unlisted key": ("carol", "bob", None, "which is not an approver of environment 'prod'"),
    "expired": ("expired", "bob", None, "expired at"),
    "notebook": ("alice", "bob", ("notebooks/drills/gated.ipynb", "# Gated", "# Gatee"), "the notebook changed"),
    "parameter": ("alice", "bob", "marker", "the parameters differ"),
    "environment file": ("alice", "bob", ("parameters/environments/prod.yaml", "production: true",
                                          "production: true "), "the environment file changed"),
    "operator not listed": ("alice", "carol", None, "carol is not an operator of environment 'prod'"),
    "unknown id": ("apv-0000000000000000", "bob", None, "is not in the ledger"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_run_is_refused_with_the_condition_that_failed_and_nothing_runs(approved: Approved, tmp_path: Path,
                                                                          case: str) -> None:
    who, operator, change, message = REFUSALS[case]
    project = approved.copy(tmp_path / "copy")
    marker = approved.marker
    if change == "marker":
        marker = Path(f"{approved.marker}s")  # one character more in one parameter
    elif change:
        _edit(project.root / change[0], change[1], change[2])
    before = (project.archive / "ledger.jsonl").read_bytes()
    aid = approved.ids.get(who, who) if who else None
    result = _run(project, approved, *(["--approval", aid] if aid else []), operator=operator, marker=marker)
    assert result.code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not approved.marker.exists() and not marker.exists()
    assert (project.archive / "ledger.jsonl").read_bytes() == before  # nothing ran, nothing was entered


def test_an_approved_run_goes_through_and_its_record_and_page_show_the_approval(approved: Approved,
                                                                               tmp_path: Path) -> None:
    project = approved.copy(tmp_path / "copy")
    marker = tmp_path / "promoted-here"
    # The same plan as the dry run: the copy's notebook, parameters and environment file are unchanged,
    # but the marker path is a parameter, so the approved dry run's marker path is used.
    result = _run(project, approved, "--approval", approved.ids["alice"])
    assert result.code == 0, result.output
    assert f"gate promote opened by approval {approved.ids['alice']} of alice" in result.stderr
    assert approved.marker.read_text() == "promoted" and not marker.exists()
    approved.marker.unlink()
    record = json.loads((project.run_dirs()[-1] / "record.json").read_text())
    [approval] = record["approvals"]
    assert approval["id"] == approved.ids["alice"] and approval["approver"] == "alice"
    assert approval["plan_sha256"] == record["plan"]["sha256"] and approval["dry_run"] == approved.dry
    dry_record = json.loads((project.archive / "runs" / approved.dry / "record.json").read_text())
    assert dry_record["plan"] == record["plan"]
    assert approval["key_fingerprint"].startswith("SHA256:") and record["gates"][0]["gate"] == "promote"
    from drillbook.site.evidence import _cleanups_and_gates

    page = _cleanups_and_gates(record)
    assert approved.ids["alice"] in page and "by **alice**" in page and record["plan"]["sha256"][:16] in page
    entry = next(e for e in ledger.read_entries(project.archive) if e.get("type") == "approval")
    assert entry["approval"]["id"] == approved.ids["alice"] and entry["sig_format"] == "ed25519"
    assert cli(project, "verify", env=approved.env).code == 0  # approvals are signed ledger entries
    assert ledger.read_entries(project.archive)[-1]["approvals"] == [approved.ids["alice"]]
    before = (project.archive / "ledger.jsonl").read_bytes()
    again = _run(project, approved, "--approval", approved.ids["alice"])  # an approval is used once
    assert again.code == 2, again.output
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: approval {approved.ids['alice']} was already used by run {record['run_id']}"], \
        again.stderr
    assert not approved.marker.exists() and (project.archive / "ledger.jsonl").read_bytes() == before


def test_approve_refuses_what_it_cannot_bind(approved: Approved, tmp_path: Path) -> None:
    project = approved.copy(tmp_path / "copy")
    key = approver_key(project, tmp_path, "alice")
    wrong_gate = cli(project, "approve", approved.dry, "--gate", "nope", "--key", str(key), env=approved.env)
    assert wrong_gate.code == 2 and "has no mutating step behind gate 'nope'" in wrong_gate.stderr
    too_long = cli(project, "approve", approved.dry, "--gate", "promote", "--key", str(key), "--expires", "30d",
                   env=approved.env)
    assert too_long.code == 2 and "outside 1 minute to 7 days" in too_long.stderr
    no_key = cli(project, "approve", approved.dry, "--gate", "promote", env=approved.env)
    assert no_key.code == 2 and "give the approver's key" in no_key.stderr


def test_an_ssh_key_signs_with_ssh_keygen_and_checks_without_it(approved: Approved, tmp_path: Path) -> None:
    if not shutil.which("ssh-keygen"):
        pytest.fail("ssh-keygen (openssh-client) is required: make system-deps installs openssh-server")
    project = approved.copy(tmp_path / "copy")
    key = tmp_path / "dave"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env_file = project.root / "parameters" / "environments" / "prod.yaml"
    _edit(env_file, "  approvers:\n", f"  approvers:\n    - {{name: dave, key: {key}.pub}}\n")
    result = cli(project, "approve", approved.dry, "--gate", "promote", "--ssh-key", str(key), env=approved.env)
    assert result.code == 0, result.output
    aid = result.stdout.split()[1].rstrip(":")
    entry = approvals.find(project.archive, aid)
    assert entry["sig_format"] == "sshsig" and entry["approver_sig"].startswith("-----BEGIN SSH SIGNATURE-----")
    prod = load_environment("prod", project.root)
    # Its plan hash was the dry run's, taken before the environment file named dave: it binds that file.
    changed = approvals.plan_hash(project.root / "notebooks" / "drills" / "gated.ipynb",
                                  {"marker_path": str(approved.marker)}, env_file)
    with pytest.raises(approvals.ApprovalRefused, match="the environment file changed"):
        approvals.check(entry, drill="gated", env=prod, project=project.root, plan=changed, operator="bob@h")
    entry["approver_sig"] = entry["approver_sig"].replace("A", "B", 1)  # a forged signature
    with pytest.raises(approvals.ApprovalRefused, match="signature does not check"):
        approvals.check(entry, drill="gated", env=prod, project=project.root, plan=changed, operator="bob@h")
    assert trust.fingerprint(approvals.approvers(prod, project.root)[entry["approval"]["key_fingerprint"]][1]) \
        == entry["approval"]["key_fingerprint"]
