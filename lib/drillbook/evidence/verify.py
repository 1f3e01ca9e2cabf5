"""``drillbook verify``: every hash and signature of the archive recomputed against the ledger.

The ledger's chain and signatures, its signed HEAD, each bundle against the MANIFEST hash its
entry signed, and bundles that no entry names. Each problem names its run where it has one.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import EvidenceError
from . import keys, ledger
from .archive import RUNS, check_bundle, run_dir


@dataclass
class Problem:
    run_id: str | None
    what: str

    def __str__(self) -> str:
        return f"{self.run_id}: {self.what}" if self.run_id else self.what


@dataclass
class VerifyReport:
    runs: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_chain(entries: list[dict[str, Any]], public: dict[str, Ed25519PublicKey]) -> list[Problem]:
    problems = []
    prev = ledger.GENESIS
    for index, entry in enumerate(entries):
        if "corrupt" in entry:
            problems.append(Problem(None, f"ledger line {index + 1} is not valid JSON"))
            prev = None
            continue
        run_id = entry.get("run_id")
        if entry.get("seq") != index + 1 or (prev is not None and entry.get("prev") != prev):
            problems.append(Problem(run_id, f"reordered: ledger line {index + 1} holds seq {entry.get('seq')} "
                                            "and does not follow the entry before it"))
        if ledger.entry_hash(entry) != entry.get("hash"):
            problems.append(Problem(run_id, "modified: its ledger entry was altered"))
        pub = public.get(str(entry.get("key_id")))
        if pub is None:
            problems.append(Problem(run_id, f"signed by unknown key {entry.get('key_id')}"))
        elif not keys.verify_signature(pub, str(entry.get("hash")).encode("ascii"), str(entry.get("sig"))):
            problems.append(Problem(run_id, "bad signature on its ledger entry"))
        prev = entry.get("hash")
    return problems


def _check_head(archive: Path, entries: list[dict[str, Any]], public: dict[str, Ed25519PublicKey]) -> list[Problem]:
    head = ledger.read_head(archive)
    good = [e for e in entries if "corrupt" not in e]
    if head is None:
        return [Problem(None, "HEAD is missing: the ledger's end cannot be confirmed")] if good else []
    pub = public.get(str(head.get("key_id")))
    signed = {k: head.get(k) for k in ("seq", "hash", "key_id")}
    if pub is None or not keys.verify_signature(pub, ledger.canonical(signed), str(head.get("sig"))):
        return [Problem(None, "HEAD signature is invalid")]
    last = good[-1] if good else None
    if last is None or head["seq"] > len(entries):
        ends = last["seq"] if last else 0
        return [Problem(None, f"truncated: HEAD records {head['seq']} runs but the ledger ends at {ends}")]
    if last["seq"] != head["seq"] or last["hash"] != head["hash"]:
        return [Problem(None, f"ledger end does not match HEAD (seq {head['seq']})")]
    return []


def verify_archive(archive: Path, public_keys: list[Path] | None = None, workers: int = 8) -> VerifyReport:
    """Recompute every hash and signature. With ``public_keys`` only those keys are trusted."""
    if not archive.exists():
        raise EvidenceError(f"no evidence archive at {archive}", "run a drill first, or pass --archive")
    public = keys.load_public_keys(archive, public_keys)
    entries = ledger.read_entries(archive)
    report = VerifyReport(runs=len([e for e in entries if "corrupt" not in e]))
    report.problems.extend(_check_chain(entries, public))
    report.problems.extend(_check_head(archive, entries, public))
    in_ledger = [(e["run_id"], e.get("manifest_sha256", "")) for e in entries if "run_id" in e]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda item: check_bundle(run_dir(archive, item[0]), item[1]), in_ledger)
        for (run_id, _), issues in zip(in_ledger, results):
            report.problems.extend(Problem(run_id, issue) for issue in issues)
    known = {run_id for run_id, _ in in_ledger}
    runs_root = archive / RUNS
    if runs_root.is_dir():
        for child in sorted(runs_root.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and child.name not in known:
                report.problems.append(Problem(child.name, "added outside the ledger"))
    return report
