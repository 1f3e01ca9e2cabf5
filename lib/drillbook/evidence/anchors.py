"""Anchors: the ledger's head (seq, entry hash, time) kept where the archive's writer cannot quietly rewrite it.

Someone who can write the archive and holds the signing key can delete the newest runs with their
ledger lines and sign a new HEAD, or put back an older signed HEAD: the archive is then consistent
with itself. An anchor is a copy of the head taken earlier and kept elsewhere:

* the published site: every publish writes ``evidence/anchor.json`` (the head it saw);
* the git branch ``evidence-anchors`` of the project's repository: ``drillbook anchor`` adds one
  commit per anchor holding ``anchor.json``, written with git plumbing (hash-object, mktree,
  commit-tree, update-ref), so neither the working tree nor the current branch is touched.

``check`` holds the ledger to every anchor: an anchored entry that is gone names the missing
sequence numbers, one that differs says the history was rewritten, and a HEAD older than the
newest anchor says it was put back.
"""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import journal, paths
from ..errors import EvidenceError, NotFound
from . import ledger

BRANCH = "evidence-anchors"
REF = f"refs/heads/{BRANCH}"
FILE_NAME = "anchor.json"
SITE_FILE = f"evidence/{FILE_NAME}"
MAX_ANCHOR_BYTES = 64 * 1024


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    recorded_at: str | None  # when the anchored entry was recorded
    anchored_at: str | None  # when the anchor was taken
    where: str = ""  # for messages: "git evidence-anchors 1a2b3c4d", "site …/anchor.json"
    genesis: str | None = None  # the hash of the ledger's first entry: which archive it anchors

    def document(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "where" and (k != "genesis" or v)}


class AnchorError(EvidenceError):
    """An anchor that cannot be read or written (bad input: exit 2)."""


# --------------------------------------------------------------------------- the head now
def current_head(archive: Path) -> Anchor | None:
    """The head the archive shows now (HEAD, with its entry's time), or None for an empty ledger."""
    head = ledger.read_head(archive)
    if not head or not isinstance(head.get("seq"), int):
        return None
    recorded = head.get("recorded_at")
    entries = ledger.read_entries(archive)
    if recorded is None:  # a HEAD written before HEAD carried its time: take the entry's
        recorded = next((e for e in entries if e.get("seq") == head["seq"]), {}).get("recorded_at")
    first = entries[0].get("hash") if entries else None
    return Anchor(head["seq"], str(head.get("hash")), recorded, journal.now_iso(), genesis=first)


def _parse(raw: bytes, where: str) -> Anchor:
    try:
        data = json.loads(raw)
        return Anchor(int(data["seq"]), str(data["hash"]), data.get("recorded_at"), data.get("anchored_at"), where,
                      data.get("genesis"))
    except (ValueError, KeyError, TypeError):
        raise AnchorError(f"{where} is not a drillbook anchor", "it must hold seq, hash and recorded_at") from None


# --------------------------------------------------------------------------- the site
def site_document(archive: Path) -> str | None:
    """What a publish writes as ``evidence/anchor.json`` (None when there is no ledger yet)."""
    head = current_head(archive)
    if head is None:
        return None
    # As of the head's own time: an archive that did not change publishes an unchanged file.
    document = {**head.document(), "anchored_at": head.recorded_at}
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def site_anchor(source: str) -> Anchor:
    """The anchor a published site holds: a built site's folder, its ``evidence/`` folder, or its URL."""
    if source.startswith(("http://", "https://")):
        url = source.rstrip("/") + "/" + (FILE_NAME if source.rstrip("/").endswith("/evidence") else SITE_FILE)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (http(s) only, checked above)
                return _parse(response.read(MAX_ANCHOR_BYTES + 1)[:MAX_ANCHOR_BYTES], url)
        except (urllib.error.URLError, OSError) as exc:
            raise AnchorError(f"cannot read the site's anchor at {url}: {exc}", "check the URL of the published site") from None
    folder = Path(source)
    for candidate in (folder / SITE_FILE, folder / FILE_NAME, folder):
        if candidate.is_file():
            return _parse(candidate.read_bytes()[:MAX_ANCHOR_BYTES], str(candidate))
    raise AnchorError(f"no {SITE_FILE} in {folder}", "pass the folder of a site built by drillbook publish, or its URL")


# --------------------------------------------------------------------------- git
def _git(project: Path, *args: str, data: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(project), *args], input=data, capture_output=True,
                              env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AnchorError(f"git {args[0]} failed: {exc}", "install git") from None
    if done.returncode != 0:
        raise AnchorError(f"git {' '.join(args[:2])} failed: {done.stderr.decode('utf-8', 'replace').strip()}",
                          "the project must be a git repository (git init), with git able to write it")
    return done.stdout


def _tip(project: Path) -> str | None:
    try:
        return _git(project, "rev-parse", "-q", "--verify", REF).decode().strip() or None
    except AnchorError:
        return None


def _identity() -> dict[str, str]:
    """Commit as the user git knows, else as drillbook: an anchor must not fail for want of user.email."""
    env = dict(os.environ)
    known = subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], capture_output=True, env=env)
    if known.returncode != 0:
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", "drillbook")
            env.setdefault(f"GIT_{role}_EMAIL", "drillbook@localhost")
    return env


def git_anchors(project: Path) -> list[Anchor]:
    """Every anchor on the branch, oldest first; empty when the project has none (or is not in git)."""
    tip = _tip(project)
    if tip is None:
        return []
    commits = _git(project, "rev-list", "--reverse", tip).decode().split()
    batch = _git(project, "cat-file", "--batch", data="".join(f"{c}:{FILE_NAME}\n" for c in commits).encode())
    found, offset = [], 0
    for commit in commits:
        header_end = batch.index(b"\n", offset)
        header = batch[offset:header_end].split()
        if len(header) < 3 or header[1] != b"blob":  # "<name> missing": a commit without anchor.json
            offset = header_end + 1
            continue
        size = int(header[2])
        body = batch[header_end + 1:header_end + 1 + size]
        offset = header_end + 1 + size + 1
        found.append(_parse(body, f"git {BRANCH} {commit[:8]}"))
    return found


def write_git_anchor(project: Path, archive: Path) -> Anchor:
    """Commit the archive's head to ``evidence-anchors``; the working tree and HEAD are left alone."""
    head = current_head(archive)
    if head is None:
        raise AnchorError(f"nothing to anchor: the ledger in {archive} is empty", "run a drill first")
    _git(project, "rev-parse", "--git-dir")
    text = json.dumps(head.document(), indent=1, sort_keys=True) + "\n"
    blob = _git(project, "hash-object", "-w", "--stdin", data=text.encode()).decode().strip()
    tree = _git(project, "mktree", data=f"100644 blob {blob}\t{FILE_NAME}\n".encode()).decode().strip()
    parent = _tip(project)
    message = f"anchor: ledger seq {head.seq} entry {head.hash[:16]} recorded {head.recorded_at}\n"
    commit = _git(project, "commit-tree", tree, *(["-p", parent] if parent else []), "-m", message,
                  env=_identity()).decode().strip()
    # Compare-and-swap: two anchors at once cannot drop one another's commit.
    _git(project, "update-ref", "-m", "drillbook anchor", REF, commit, parent or "0" * 40)
    return Anchor(head.seq, head.hash, head.recorded_at, head.anchored_at, f"git {BRANCH} {commit[:8]}", head.genesis)


def project_of(archive: Path) -> Path | None:
    """The project whose git repository anchors ``archive``: ``<project>/reports/evidence``, or the
    project's configured archive; None for a copy elsewhere (pass ``--anchors`` to insist)."""
    archive = archive.resolve()
    owner = archive.parent.parent
    if archive.parent.name == "reports" and (owner / "parameters" / "environments").is_dir():
        return owner
    try:
        project = paths.project_root()
        return project if archive == paths.archive_root(project).resolve() else None
    except (NotFound, EvidenceError):  # no project, or its archive is on object storage (a local copy here)
        return None


def anchors_of(archive: Path) -> list[Anchor]:
    """The git anchors plain ``verify`` holds ``archive`` to: those of this ledger (same first entry).

    Checkouts of one repository share its branches, and each may hold an archive of its own (reports/
    is not committed): an anchor of another ledger is left to ``verify --anchors``, which takes them all.
    """
    project = project_of(archive)
    if project is None:
        return []
    found = git_anchors(project)
    if not found:
        return []
    entry = ledger.first_entry(archive)  # one line: a ledger of 10,000 entries is read once, by verify
    first = entry.get("hash") if entry else None
    return [a for a in found if a.genesis is None or a.genesis == first]


# --------------------------------------------------------------------------- checking
def seq_list(numbers: list[int]) -> str:
    """``8, 9, 10``; a run of more than five numbers as ``8-5000``."""
    spans: list[tuple[int, int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], n)
        else:
            spans.append((n, n))
    return ", ".join(", ".join(map(str, range(a, b + 1))) if b - a < 5 else f"{a}-{b}" for a, b in spans)


def check(entries: list[dict[str, Any]], head: dict[str, Any] | None, anchors: list[Anchor]) -> list[str]:
    """What the ledger lost or changed since any anchor (empty when it holds every anchored entry)."""
    if not anchors:
        return []
    by_seq = {e["seq"]: e for e in entries if isinstance(e.get("seq"), int)}
    problems: list[str] = []
    newest = max(anchors, key=lambda a: a.seq)
    missing = [s for s in range(1, newest.seq + 1) if s not in by_seq]
    if missing:
        problems.append(f"truncated since the anchor of {newest.anchored_at} ({newest.where}, seq {newest.seq}): "
                        f"sequence number(s) {seq_list(missing)} missing")
    first = by_seq.get(1, {}).get("hash")
    other = next((a for a in anchors if a.genesis and first and a.genesis != first), None)
    if other is not None:
        problems.append(f"rewritten from seq 1: the ledger's first entry is not the one anchored at "
                        f"{other.anchored_at} ({other.where}), or this is another archive")
    for anchor in sorted(anchors, key=lambda a: a.seq):
        entry = by_seq.get(anchor.seq)
        if entry is not None and entry.get("hash") != anchor.hash:
            problems.append(f"rewritten: ledger entry seq {anchor.seq} is not the one anchored at "
                            f"{anchor.anchored_at} ({anchor.where})")
            break  # every later anchor differs too
    if head and isinstance(head.get("seq"), int) and head["seq"] < newest.seq:
        problems.append(f"HEAD put back: it records seq {head['seq']}"
                        f"{' of ' + str(head['recorded_at']) if head.get('recorded_at') else ''}, older than the "
                        f"anchor of {newest.anchored_at} ({newest.where}, seq {newest.seq})")
    return problems
