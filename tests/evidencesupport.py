"""Small signed archives written straight through the evidence API (no kernel: a run costs milliseconds),
and the forger's tools the trust and anchor tests need: re-signing, truncating, putting HEAD back."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import Project
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from drillbook import journal
from drillbook.config.secrets import Redactor
from drillbook.evidence import keys, ledger
from drillbook.evidence.archive import record_run


def new_project(root: Path) -> Project:
    (root / "parameters" / "environments").mkdir(parents=True)
    (root / "parameters" / "environments" / "local.yaml").write_text("hosts:\n  here:\n    shell: local\n")
    return Project(root)


def add_runs(archive: Path, count: int, key: Ed25519PrivateKey | None = None, drill: str = "passes") -> list[str]:
    """``count`` small runs signed by ``key`` (default: this test's signing key, as the CLI uses)."""
    key = key or keys.load_or_create_signing_key()
    ids = []
    for _ in range(count):
        seq = len(ledger.read_entries(archive)) + 1
        run_id = f"20260101T{seq:06d}Z-{drill}-local-{seq:04d}"
        now = journal.now_iso()
        record = {"run_id": run_id, "drill": drill, "env": "local", "status": "passed", "kind": "drill",
                  "dry_run": False, "started_at": now, "finished_at": now}
        record_run(archive, key, record, Redactor(), notebook={"cells": [], "n": seq}, html=f"<p>run {seq}</p>")
        ids.append(run_id)
    return ids


def write_entries(archive: Path, entries: list[dict], key: Ed25519PrivateKey) -> None:
    """Rewrite the ledger as a forger holding ``key`` would: every entry re-chained and re-signed, HEAD too."""
    prev, lines = ledger.GENESIS, []
    kid = keys.export_public_key(key, archive)
    for seq, entry in enumerate(entries, 1):
        entry = {k: v for k, v in entry.items() if k not in ledger.SIGNED_OUT}
        entry.update(seq=seq, prev=prev, key_id=kid)
        entry["hash"] = ledger.entry_hash(entry)
        entry["sig"] = keys.sign(key, entry["hash"].encode("ascii"))
        lines.append(json.dumps(entry, sort_keys=True) + "\n")
        prev = entry["hash"]
    (archive / "ledger.jsonl").write_text("".join(lines))
    if entries:
        ledger.write_head(archive, key, json.loads(lines[-1]))


def drop_last(archive: Path, count: int, key: Ed25519PrivateKey) -> list[str]:
    """Delete the newest ``count`` runs, their ledger lines, and sign a HEAD for what is left."""
    entries = ledger.read_entries(archive)
    gone = entries[-count:]
    for entry in gone:
        shutil.rmtree(archive / "runs" / entry["run_id"])
    kept = entries[:-count]
    (archive / "ledger.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in kept))
    ledger.write_head(archive, key, kept[-1])
    return [e["run_id"] for e in gone]
