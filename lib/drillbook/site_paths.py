"""Where each generated page lives inside ``docs/`` (one place, so links between pages agree).

    runbooks/index.md, runbooks/<name>.md             every runbook and drill as a procedure
    status/index.md, status/compliance.md             dashboard and compliance matrix
    status/history/index.md, status/history/<name>.md  history per drill, with its charts (PNG)
    evidence/index.md, evidence/keys/<key_id>.pem     verification status, public keys, ledger, HEAD
    evidence/runs/<run_id>/index.md                   full evidence page (latest runs per drill)
    evidence/runs/<run_id>/notebook.html              the run-time HTML, copied as a static file
"""
from __future__ import annotations

from .site_md import slug

RUNBOOKS_INDEX = "runbooks/index.md"
DASHBOARD = "status/index.md"
COMPLIANCE = "status/compliance.md"
HISTORY_INDEX = "status/history/index.md"
EVIDENCE_INDEX = "evidence/index.md"
VERIFY_GUIDE = "audit/verifying-evidence.md"  # hand-written


def runbook_page(name: str) -> str:
    return f"runbooks/{slug(name)}.md"


def history_page(name: str) -> str:
    return f"status/history/{slug(name)}.md"


def chart(name: str, what: str) -> str:
    return f"status/history/{slug(name)}-{what}.png"


def run_folder(run_id: str) -> str:
    return f"evidence/runs/{slug(run_id)}"


def run_page(run_id: str) -> str:
    return f"{run_folder(run_id)}/index.md"


def run_file(run_id: str, name: str) -> str:
    return f"{run_folder(run_id)}/{name}"


def key_file(key_id: str) -> str:
    return f"evidence/keys/{slug(key_id)}.pem"
