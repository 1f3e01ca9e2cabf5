"""``drillbook verify``: every hash and signature of the archive recomputed against the ledger.

The ledger's chain and signatures, its signed HEAD, each bundle against the MANIFEST hash its
entry signed, and bundles that no entry names. Each problem names its run where it has one.

Signatures count only from keys the trust file pins at the entry's time (``trust``), or only the
auditor's own ``--public-key``s; the archive's ``keys/`` proves nothing. Anchors kept outside the
archive (``anchors``) catch a history cut short or rewritten and a HEAD put back. A published
site's ``evidence/`` folder is verified too (``published``): its ledger, HEAD and every bundle it holds.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import journal
from ..errors import EvidenceError
from . import anchors as anchors_mod
from . import ledger, published, trust
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


def _recorded(entry: dict[str, Any]) -> datetime | None:
    try:
        return journal.parse_iso(str(entry.get("recorded_at")))
    except ValueError:
        return None


def _check_chain(entries: list[dict[str, Any]], signers: trust.Signers) -> list[Problem]:
    problems = []
    prev = ledger.GENESIS
    latest: datetime | None = None
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
        when = _recorded(entry)
        if when is not None and latest is not None and when < latest:
            problems.append(Problem(run_id, f"back-dated: recorded at {entry.get('recorded_at')}, "
                                            "before the entry preceding it"))
        latest = max(latest, when) if latest and when else (when or latest)
        if signers.trusted is not None:
            issue = signers.check(entry, when)
            if issue:
                problems.append(Problem(run_id or _what(entry, index), issue))
        prev = entry.get("hash")
    return problems


def _what(entry: dict[str, Any], index: int) -> str:
    return f"{entry.get('type') or 'entry'} #{entry.get('seq', index + 1)}"


def _check_head(head: dict[str, Any] | None, entries: list[dict[str, Any]], signers: trust.Signers) -> list[Problem]:
    good = [e for e in entries if "corrupt" not in e]
    if head is None:
        return [Problem(None, "HEAD is missing: the ledger's end cannot be confirmed")] if good else []
    if signers.trusted is not None:
        issue = signers.check_head(head, _recorded(good[-1]) if good else None)
        if issue:
            return [Problem(None, f"HEAD: {issue}")]
    last = good[-1] if good else None
    if last is None or head["seq"] > len(entries):
        ends = last["seq"] if last else 0
        return [Problem(None, f"truncated: HEAD records {head['seq']} runs but the ledger ends at {ends}")]
    if last["seq"] != head["seq"] or last["hash"] != head["hash"]:
        return [Problem(None, f"ledger end does not match HEAD (seq {head['seq']})")]
    return []


# From this many runs the files are hashed in a process of its own (see ``_hasher``).
HASH_IN_A_PROCESS_FROM = 2000


def verify_archive(archive: Path, public_keys: list[Path] | None = None, workers: int = 8, *,
                   trust_file: Path | None | bool = True, anchors: list[anchors_mod.Anchor] | None = None,
                   process_from: int = HASH_IN_A_PROCESS_FROM) -> VerifyReport:
    """Recompute every hash and signature. With ``public_keys`` only those keys are trusted, else the
    trust file (``True``: the one ``trust.trust_for`` finds for the archive). ``anchors``: heads kept
    elsewhere that the ledger must still hold. ``process_from``: see ``_hasher``."""
    if not archive.exists():
        raise EvidenceError(f"no evidence archive at {archive}", "run a drill first, or pass --archive")
    site = published.site_archive(archive)
    root = site or archive
    trust_path = trust.trust_for(root) if trust_file is True else (trust_file or None)
    signers = trust.signers_for(public_keys, trust_path)
    entries = ledger.read_entries(root)
    head = ledger.read_head(root)
    report = VerifyReport(runs=len([e for e in entries if "run_id" in e]))
    if signers.trusted is None and entries:
        report.problems.append(Problem(None, "no trust file pins the signing keys: nothing proves who signed "
                                             "(run drillbook keys trust in the project, or pass --public-key)"))
    in_ledger = [(str(e["run_id"]), str(e.get("manifest_sha256", ""))) for e in entries if "run_id" in e]
    in_process = len(in_ledger) >= process_from
    with _hasher(in_process) as elsewhere:
        # Files are hashed elsewhere while this thread checks the chain and the signatures: the
        # two overlap instead of adding up.
        # In a process of its own one thread hashes fastest (8 threads: twice as slow, on the GIL).
        bundles = elsewhere.submit(_bundle_problems, archive, site, in_ledger, 1 if in_process else workers)
        report.problems.extend(_check_chain(entries, signers))
        report.problems.extend(_check_head(head, entries, signers))
        report.problems.extend(Problem(None, p) for p in anchors_mod.check(entries, head, anchors or []))
        report.problems.extend(Problem(run_id, issue) for run_id, issue in bundles.result())
    if site is None:
        report.problems.extend(_unlisted(archive, {run_id for run_id, _ in in_ledger}))
    return report


def _hasher(in_a_process: bool) -> Executor:
    """Where the bundles are hashed: a thread (running a pool of them), or on a large archive a
    process forked for it. Reads and hashlib release the GIL, ed25519 (cryptography) does not: with
    ten thousand signatures checked here, hashing threads in this process wait on the GIL most of the
    time (2.5 s instead of the 0.7 s the hashing takes alone, bench/archive_scale.py). A forked
    process costs tens of milliseconds and has a core of its own."""
    if in_a_process:
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(max_workers=1)


def _bundle_problems(archive: Path, site: Path | None, in_ledger: list[tuple[str, str]],
                     workers: int) -> list[tuple[str, str]]:
    """(run id, problem) for every bundle, hashed by a pool of threads."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [problem for future in _start_bundles(pool, archive, site, in_ledger, workers)
                for problem in future.result()]


def _start_bundles(pool: ThreadPoolExecutor, archive: Path, site: Path | None, in_ledger: list[tuple[str, str]],
                   workers: int) -> list[Future[list[tuple[str, str]]]]:
    """The bundle checks, submitted in chunks (one future per bundle costs more than checking it)."""
    size = max(1, len(in_ledger) // (workers * 4))
    chunks = [in_ledger[i:i + size] for i in range(0, len(in_ledger), size)]
    if site is not None:
        return [pool.submit(published.check_bundles, site, chunk) for chunk in chunks]
    return [pool.submit(_check_chunk, archive, chunk) for chunk in chunks]


def _check_chunk(archive: Path, chunk: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(run_id, issue) for run_id, sha in chunk for issue in check_bundle(run_dir(archive, run_id), sha)]


def _unlisted(archive: Path, known: set[str]) -> list[Problem]:
    """Bundles no ledger entry names (``scandir``: its entries know their type without a stat)."""
    runs_root = archive / RUNS
    if not runs_root.is_dir():
        return []
    with os.scandir(runs_root) as found:
        names = sorted(d.name for d in found if d.is_dir() and not d.name.startswith(".") and d.name not in known)
    return [Problem(name, "added outside the ledger") for name in names]
