"""The ledger's hash chain and signatures, and the signing key's protection."""
from __future__ import annotations

from pathlib import Path

import pytest
from drillbook.evidence import ledger


# ----------------------------------------------------------------------------- ledger
def test_entry_hash_ignores_hash_and_signature_but_covers_everything_else() -> None:
    entry = {"seq": 1, "run_id": "r", "prev": ledger.GENESIS, "manifest_sha256": "ab"}
    h = ledger.entry_hash(entry)
    assert ledger.entry_hash({**entry, "hash": "x", "sig": "y"}) == h
    assert ledger.entry_hash({**entry, "run_id": "s"}) != h


def test_ledger_append_chains_and_signs(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from drillbook.evidence.verify import verify_archive

    key = Ed25519PrivateKey.generate()
    first = ledger.append(tmp_path, key, {"run_id": "a", "manifest_sha256": "1"})
    second = ledger.append(tmp_path, key, {"run_id": "b", "manifest_sha256": "2"})
    assert (first["seq"], second["seq"]) == (1, 2) and second["prev"] == first["hash"]
    assert ledger.read_head(tmp_path)["hash"] == second["hash"]
    # An archive of no project has no trust file: the test trusts the key it signed with.
    report = verify_archive(tmp_path, list((tmp_path / "keys").glob("*.pem")))
    # The chain and signatures hold; the bundles themselves were never written.
    assert [str(p) for p in report.problems] == ["a: deleted: the run's folder is missing",
                                                 "b: deleted: the run's folder is missing"]


def test_signing_key_is_private_and_refused_when_readable(tmp_path: Path) -> None:
    from drillbook.errors import EvidenceError
    from drillbook.evidence import keys

    keys.load_or_create_signing_key(tmp_path)
    path = tmp_path / keys.PRIVATE_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(EvidenceError, match="readable by others"):
        keys.load_or_create_signing_key(tmp_path)
