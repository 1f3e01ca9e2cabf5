"""`drillbook verify` against an archive of real runs, then each kind of tampering.

The archive is made once per module by the real runner; each test tampers with its own copy.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Project, cli

# The module-wide archive is signed before any test's own trust file exists: the project's.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("project_trust_file")]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A project with four archived runs, and the signing-key home that signed them."""

    root = tmp_path_factory.mktemp("verify") / "project"
    home = root.parent / "home"
    (root / "parameters" / "environments").mkdir(parents=True)
    (root / "parameters" / "environments" / "local.yaml").write_text("hosts:\n  here:\n    shell: local\n")
    project = Project(root)
    project.add_notebook("passes.ipynb")
    project.add_notebook("check_fails.ipynb")
    env = {"DRILLBOOK_HOME": str(home)}
    for name in ("passes", "check_fails", "passes", "passes"):
        cli(project, "run", name, "--env", "local", env=env)
    assert len(project.run_dirs()) == 4
    return root, home


@pytest.fixture
def copy(pristine: tuple[Path, Path], tmp_path: Path) -> Project:
    root, _ = pristine
    target = tmp_path / "copy"
    shutil.copytree(root, target)
    return Project(target)


def verify(project: Project) -> tuple[int, str]:
    result = cli(project, "verify")
    return result.code, result.stdout


def run_ids(project: Project) -> list[str]:
    return [json.loads(line)["run_id"] for line in (project.archive / "ledger.jsonl").read_text().splitlines()]


def test_intact_archive_verifies(copy: Project) -> None:
    code, out = verify(copy)
    assert code == 0, out
    assert "verify: 4 run(s), ledger chain, signatures and every file intact" in out


def test_one_changed_byte_is_named(copy: Project) -> None:
    victim = run_ids(copy)[1]
    path = copy.archive / "runs" / victim / "notebook.html"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code, out = verify(copy)
    assert code == 1
    assert f"{victim}: modified: notebook.html changed" in out
    assert out.count("✗") == 1


def test_edited_record_and_rewritten_manifest_are_named(copy: Project) -> None:
    victim = run_ids(copy)[1]
    bundle = copy.archive / "runs" / victim
    record = json.loads((bundle / "record.json").read_text())
    record["status"] = "passed"
    (bundle / "record.json").write_text(json.dumps(record))
    from drillbook.evidence.archive import write_manifest

    write_manifest(bundle)  # a careful forger updates MANIFEST too: the ledger still knows
    code, out = verify(copy)
    assert code == 1
    assert f"{victim}: modified: MANIFEST does not match the ledger" in out


def test_deleted_run_is_named(copy: Project) -> None:
    victim = run_ids(copy)[2]
    shutil.rmtree(copy.archive / "runs" / victim)
    code, out = verify(copy)
    assert code == 1
    assert f"{victim}: deleted: the run's folder is missing" in out


def test_reordered_ledger_is_named(copy: Project) -> None:
    path = copy.archive / "ledger.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("".join(lines))
    ids = run_ids(copy)
    code, out = verify(copy)
    assert code == 1
    assert f"{ids[1]}: reordered:" in out and f"{ids[2]}: reordered:" in out


def test_run_added_outside_the_ledger_is_named(copy: Project) -> None:
    source = copy.archive / "runs" / run_ids(copy)[0]
    shutil.copytree(source, copy.archive / "runs" / "20991231T000000Z-forged-local-000000")
    code, out = verify(copy)
    assert code == 1
    assert "20991231T000000Z-forged-local-000000: added outside the ledger" in out


def test_truncated_ledger_is_detected(copy: Project) -> None:
    path = copy.archive / "ledger.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    last = json.loads(lines[-1])["run_id"]
    path.write_text("".join(lines[:-1]))
    code, out = verify(copy)
    assert code == 1
    assert "truncated: HEAD records 4 runs but the ledger ends at 3" in out
    assert f"{last}: added outside the ledger" in out


def test_altered_ledger_entry_is_named(copy: Project) -> None:
    path = copy.archive / "ledger.jsonl"
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["status"] = "passed"
    lines[1] = json.dumps(entry, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    code, out = verify(copy)
    assert code == 1
    assert f"{entry['run_id']}: modified: its ledger entry was altered" in out


def test_only_the_given_public_key_is_trusted(copy: Project, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from drillbook.evidence.keys import public_pem

    other = tmp_path / "other.pem"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    result = cli(copy, "verify", "--public-key", str(other))
    assert result.code == 1
    assert "signed by unknown key" in result.stdout
    published = next((copy.archive / "keys").glob("*.pem"))
    assert cli(copy, "verify", "--public-key", str(published)).code == 0


def test_bundles_hashed_in_a_forked_process_report_the_same_problems(copy: Project) -> None:
    """A large archive's bundles are hashed in a process of their own (HASH_IN_A_PROCESS_FROM runs):
    forced here on the small one, the same problems, named the same way."""
    from drillbook.evidence.verify import verify_archive

    ids = run_ids(copy)
    (copy.archive / "runs" / ids[1] / "notebook.html").write_text("changed")
    shutil.rmtree(copy.archive / "runs" / ids[2])
    in_threads = verify_archive(copy.archive, process_from=10**9)
    in_a_process = verify_archive(copy.archive, process_from=0)
    assert [str(p) for p in in_a_process.problems] == [str(p) for p in in_threads.problems]
    assert {p.run_id for p in in_a_process.problems} == {ids[1], ids[2]} and in_a_process.runs == 4
