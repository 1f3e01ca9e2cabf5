"""Pinned signing keys: the trust file decides which key may sign which entry, not the archive's keys/.

Archives are written straight through the evidence API (milliseconds a run); every check is the real
`drillbook` command, and one real run after a rotation proves the runner signs with the new key.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import Project, cli
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from drillbook.evidence import keys, ledger, rotation, trust
from evidencesupport import add_runs, new_project, write_entries

pytestmark = pytest.mark.usefixtures("project_trust_file")  # the project's own trust file


@pytest.fixture
def three(tmp_path: Path) -> Project:
    project = new_project(tmp_path / "project")
    add_runs(project.archive, 3)
    return project


def trust_file(project: Project) -> Path:
    return project.root / "parameters" / "trust.yaml"


def test_first_entry_pins_its_key_and_plain_verify_passes(three: Project) -> None:
    key = keys.load_or_create_signing_key()
    pinned = trust.load_trust(trust_file(three))
    assert [k.key_id for k in pinned] == [keys.key_id(key.public_key())]
    assert pinned[0].fingerprint == trust.fingerprint(key.public_key()) and pinned[0].valid_until is None
    first = ledger.read_entries(three.archive)[0]
    assert trust.journal_text(pinned[0].valid_from) == first["recorded_at"]
    result = cli(three, "verify")
    assert result.code == 0, result.output
    assert "verify: 3 run(s), ledger chain, signatures and every file intact" in result.stdout
    listed = cli(three, "keys", "list")
    assert listed.code == 0 and pinned[0].fingerprint in listed.stdout


def test_archive_resigned_with_a_new_key_fails_plain_verify(three: Project, tmp_path: Path) -> None:
    forger = Ed25519PrivateKey.generate()
    shutil.rmtree(three.archive / "keys")
    write_entries(three.archive, ledger.read_entries(three.archive), forger)  # keys/ now holds only the forger's
    assert [p.name for p in (three.archive / "keys").glob("*.pem")] == [f"{keys.key_id(forger.public_key())}.pem"]
    result = cli(three, "verify")
    assert result.code == 1, result.output
    forged = keys.key_id(forger.public_key())
    for run_id in [e["run_id"] for e in ledger.read_entries(three.archive)]:
        assert f"{run_id}: signed by unknown key {forged}: trust.yaml does not list it" in result.stdout
    assert "HEAD: signed by unknown key" in result.stdout
    # The archive is consistent with itself: only the pinned key catches the forgery.
    own = tmp_path / "forger.pem"
    own.write_bytes(keys.public_pem(forger.public_key()))
    assert cli(three, "verify", "--public-key", str(own)).code == 0


def test_entry_signed_after_its_keys_window_fails(three: Project) -> None:
    entries = ledger.read_entries(three.archive)
    path = trust_file(three)
    path.write_text(path.read_text().replace("valid_until: null", f'valid_until: "{entries[1]["recorded_at"]}"'))
    result = cli(three, "verify")
    assert result.code == 1, result.output
    assert re.search(rf"{entries[2]['run_id']}: signed by key \w+ at {re.escape(entries[2]['recorded_at'])}, "
                     r"outside its window", result.stdout), result.stdout
    assert entries[0]["run_id"] not in result.stdout and entries[1]["run_id"] not in result.stdout


def test_a_missing_trust_file_never_means_trust_anything(three: Project) -> None:
    trust_file(three).unlink()
    result = cli(three, "verify")
    assert result.code == 1 and "no trust file pins the signing keys" in result.stdout
    add_runs(three.archive, 1)  # not the first entry: nothing is pinned by itself
    assert not trust_file(three).exists()
    assert cli(three, "verify").code == 1
    pinned = cli(three, "keys", "trust")  # the explicit step: pins this key from the first entry it signed
    assert pinned.code == 0 and "trusted signing key" in pinned.stdout
    assert cli(three, "verify").code == 0


def test_a_malformed_trust_file_is_refused_in_one_line(three: Project) -> None:
    path = trust_file(three)
    path.write_text(re.sub(r'fingerprint: "SHA256:(.)', lambda m: f'fingerprint: "SHA256:{"0" if m.group(1) != "0" else "1"}',
                           path.read_text()))
    result = cli(three, "verify")
    assert result.code == 2
    assert "fingerprint or key_id does not match its public_key" in result.stderr and "Traceback" not in result.output


def test_keys_rotate_hands_over_and_runs_before_and_after_verify(three: Project, tmp_path: Path) -> None:
    old = keys.load_or_create_signing_key()
    three.add_notebook("passes.ipynb")
    result = cli(three, "keys", "rotate")
    assert result.code == 0, result.output
    new = keys.load_or_create_signing_key()
    old_id, new_id = keys.key_id(old.public_key()), keys.key_id(new.public_key())
    assert old_id != new_id and f"rotated: {old_id} -> {new_id}" in result.stdout
    transition = ledger.read_entries(three.archive)[-1]
    assert transition["type"] == "key-transition" and transition["key_id"] == old_id
    assert transition["new_key_id"] == new_id and transition["new_sig"]
    windows = {k.key_id: k for k in trust.load_trust(trust_file(three))}
    assert trust.journal_text(windows[old_id].valid_until) == transition["recorded_at"]
    assert trust.journal_text(windows[new_id].valid_from) == transition["recorded_at"]
    assert [keys.key_id(p) for p in rotation.retired_public_keys()] == [old_id]  # in-flight markers still check
    run = cli(three, "run", "passes", "--env", "local")  # a real run, signed with the new key
    assert run.code == 0, run.output
    assert ledger.read_entries(three.archive)[-1]["key_id"] == new_id
    verified = cli(three, "verify")
    assert verified.code == 0, verified.output
    assert "verify: 4 run(s)" in verified.stdout
    # An auditor holding only the first key follows the transition the old key signed.
    first = tmp_path / "first.pem"
    first.write_bytes(keys.public_pem(old.public_key()))
    assert cli(three, "verify", "--public-key", str(first)).code == 0
    # The old key signs nothing after the transition, whatever its window says.
    retired = add_runs(three.archive, 1, key=old)[0]
    after = cli(three, "verify")
    assert after.code == 1
    assert f"{retired}: signed by key {old_id}, retired by a key transition" in after.stdout


def test_rotation_without_a_pinned_key_is_refused(three: Project) -> None:
    trust_file(three).write_text("keys: []\n")
    before = (three.archive / "ledger.jsonl").read_bytes()
    result = cli(three, "keys", "rotate")
    assert result.code == 2 and "is not trusted now" in result.stderr
    assert (three.archive / "ledger.jsonl").read_bytes() == before  # nothing entered


def test_head_binds_its_time_and_its_signature_covers_it(three: Project) -> None:
    head = json.loads((three.archive / "HEAD").read_text())
    assert head["recorded_at"] == ledger.read_entries(three.archive)[-1]["recorded_at"]
    head["recorded_at"] = "2030-01-01T00:00:00.000Z"
    (three.archive / "HEAD").write_text(json.dumps(head))
    result = cli(three, "verify")
    assert result.code == 1 and "HEAD: signature is invalid" in result.stdout


def test_a_marker_signed_before_a_rotation_is_still_recognised(three: Project, tmp_path: Path) -> None:
    import os
    import subprocess
    import time

    from drillbook import paths
    from drillbook.config.environments import load_environment
    from drillbook.evidence import record
    from drillbook.runner import inflight

    old = keys.load_or_create_signing_key()
    root = paths.run_root()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    folder = root / "run-rotated"
    folder.mkdir(mode=0o700)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a runner that died
    run_id = "20260101T000000Z-passes-local-000099"
    base = record.base_record(run_id=run_id, drill="passes", kind="drill", title="Passes", notebook="passes.ipynb",
                              env=load_environment("local", three.root), parameters={}, dry_run=False, approve=[],
                              change=None, controls=[], source={"path": "passes.ipynb", "sha256": "0" * 64,
                                                                "git_commit": None, "git_dirty": None},
                              operator="t@h")
    info = {"run_id": run_id, "pid": gone.pid, "proc_start": None, "kernel_pid": None, "kernel_start": None,
            "run_dir": str(folder), "archive": str(three.archive), "t0": time.time(), "record": base,
            "scrub_parameters": {}, "outcome": None, "manifest_sha256": None}
    inflight.Marker(three.state / "inflight" / f"{run_id}.json", info, old)._save()
    rotation.rotate(three.archive)  # through the API: a command's start would recover the run first
    result = cli(three, "status")
    assert "is not signed by this user's drillbook key" not in result.stderr, result.stderr
    assert f"recorded run {run_id} as aborted" in result.stderr, result.output
    entry = ledger.read_entries(three.archive)[-1]
    assert entry["run_id"] == run_id and entry["key_id"] != keys.key_id(old.public_key())
    assert cli(three, "verify").code == 0
