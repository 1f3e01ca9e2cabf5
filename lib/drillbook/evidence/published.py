"""Verifying a published site: its ``evidence/`` folder holds the ledger, HEAD, the public keys and
the whole bundle of each recent run, so an auditor with only the public key checks it with
``drillbook verify --archive SITE --public-key KEY.pem``.

The site is not an archive: older runs are listed but their bundles are not published, a page
(``index.html``) sits beside each published bundle, and files a browser would render are published
with ``.txt`` appended. So each bundle that is there is checked file by file against its MANIFEST
(and the MANIFEST against the signed ledger); a bundle that is not there is not a problem.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from .archive import MANIFEST_NAME, RUNS, sha256_file

PAGE_NAMES = ("index.html", "index.md")


def site_archive(path: Path) -> Path | None:
    """The ``evidence/`` folder of a built site (or of the generated ``docs/``), or None for an archive."""
    for candidate in (path / "evidence", path):
        if (candidate / "ledger.jsonl").is_file() and any((candidate / p).is_file() for p in PAGE_NAMES):
            return candidate
    return None


def _slug(run_id: str) -> str:
    """The site's folder name for a run (as ``site.md.slug``; evidence cannot import the site)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-.") or "notebook"
    return f"{cleaned}_" if cleaned.lower() == "index" else cleaned


def _check(folder: Path, manifest_sha: str) -> list[str]:
    try:
        text = (folder / MANIFEST_NAME).read_bytes()
    except OSError:
        return ["modified: MANIFEST is missing from its published bundle"]
    if hashlib.sha256(text).hexdigest() != manifest_sha:
        return ["modified: MANIFEST does not match the ledger"]
    issues = []
    for line in text.decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            issues.append(f"modified: MANIFEST names {name!r}, outside the bundle")
            continue
        published = next((p for p in (folder / name, folder / f"{name}.txt") if p.is_file()), None)
        if published is None:
            issues.append(f"modified: {name} was removed")
        elif sha256_file(published) != digest:
            issues.append(f"modified: {name} changed")
    return issues


def check_bundles(evidence: Path, runs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(run id, problem) for every published bundle of ``runs`` (run id, MANIFEST sha256) that does
    not match the ledger; a run whose bundle is not published is skipped."""
    return [(run_id, issue) for run_id, sha in runs if (evidence / RUNS / _slug(run_id)).is_dir()
            for issue in _check(evidence / RUNS / _slug(run_id), sha)]


def published_bundles(evidence: Path, entries: list[dict[str, Any]]) -> int:
    return sum(1 for e in entries if "run_id" in e and (evidence / RUNS / _slug(str(e["run_id"]))).is_dir())
