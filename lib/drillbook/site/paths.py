"""Where each generated page lives inside ``docs/`` (one place, so links between pages agree).

    runbooks/index.md, runbooks/<name>.md             every runbook and drill as a procedure
    status/index.md, status/compliance.md             dashboard and compliance matrix
    status/incidents.md                               incidents: timelines and response targets
    status/history/index.md, status/history/<name>.md  history per drill, with its charts (PNG)
    status/history/<name>-runs.html                   every run of a drill: a plain static table
    evidence/index.md, evidence/keys/<key_id>.pem     verification status, public keys, ledger, HEAD
    evidence/runs/<run_id>/index.md, <bundle files>   full evidence page and bundle (latest runs per drill)
    evidence/html/<run_id>.html                       every run's run-time HTML, copied as a static file

Every run's HTML sits in one flat folder: a thousand runs are a thousand files, not a thousand
folders for MkDocs to create on every build.
"""
from __future__ import annotations

from .md import slug

RUNBOOKS_INDEX = "runbooks/index.md"
DASHBOARD = "status/index.md"
COMPLIANCE = "status/compliance.md"
INCIDENTS = "status/incidents.md"
HISTORY_INDEX = "status/history/index.md"
EVIDENCE_INDEX = "evidence/index.md"
VERIFY_GUIDE = "audit/verifying-evidence.md"  # hand-written
AUDIT_GUIDE = "audit/checking-a-site.md"  # hand-written


def runbook_page(name: str) -> str:
    return f"runbooks/{slug(name)}.md"


def history_page(name: str) -> str:
    return f"status/history/{slug(name)}.md"


def chart(name: str, what: str) -> str:
    return f"status/history/{slug(name)}-{what}.png"


def runs_table(name: str) -> str:
    return f"status/history/{slug(name)}-runs.html"


def run_html(run_id: str) -> str:
    return f"evidence/html/{slug(run_id)}.html"


def run_folder(run_id: str) -> str:
    return f"evidence/runs/{slug(run_id)}"


def run_page(run_id: str) -> str:
    return f"{run_folder(run_id)}/index.md"


def run_file(run_id: str, name: str) -> str:
    return f"{run_folder(run_id)}/{name}"


def key_file(key_id: str) -> str:
    return f"evidence/keys/{slug(key_id)}.pem"
