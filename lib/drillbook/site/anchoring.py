"""The dashboard's anchored head: the newest anchor on the project's ``evidence-anchors`` git branch,
and whether the archive still holds it (``evidence.anchors``; verify at build time says so)."""
from __future__ import annotations

from ..evidence import anchors
from .data import Archive
from .md import admonition, code, esc, when

ANCHOR_WORDS = ("truncated since the anchor", "rewritten", "HEAD put back")


def anchor_note(archive: Archive) -> str:
    """A short section for the dashboard (Markdown)."""
    found = anchors.anchors_of(archive.root) if archive.root.exists() else []
    if not found:
        return ("\n## Anchored head\n\nNo anchor yet: `drillbook anchor` commits the ledger's head to the "
                f"`{anchors.BRANCH}` branch of the project's git repository, where the archive's writers "
                "cannot quietly rewrite it.\n")
    newest = max(found, key=lambda a: a.seq)
    lost = [p for p in archive.verify.archive_problems if p.startswith(ANCHOR_WORDS)]
    body = (f"Ledger entry **#{esc(newest.seq)}** ({code(newest.hash[:16])}, recorded {when(newest.recorded_at)}) "
            f"was anchored at **{when(newest.anchored_at)}** on {esc(newest.where)} "
            f"({len(found)} anchor(s) in all).")
    if lost:
        return "\n## Anchored head\n\n" + admonition("failure", "The archive no longer holds its anchors",
                                                     body + "\n\n" + "\n".join(f"- {esc(p)}" for p in lost))
    return "\n## Anchored head\n\n" + body + " The archive still holds every anchored entry.\n"
