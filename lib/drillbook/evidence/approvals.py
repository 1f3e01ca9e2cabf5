"""Four-eyes approvals bound to what a dry run previewed.

Every run's record holds its **plan hash** (``plan_hash``): the sha256 of the notebook's source, of
the parameters the operator and the environment give, and of the environment file's bytes. A dry
run of a mutating notebook shows each mutating step's plan text; ``drillbook approve DRY_RUN_ID
--gate NAME`` signs, with the approver's own ed25519 key (in process, or ``ssh-keygen -Y sign``), a
document naming that dry run, the gate, the plan hash, the approver and an expiry, and enters it
in the ledger (``type: approval``). ``authorize`` lets a real run through a gate only when every
condition holds, and says which one failed otherwise (bad input, exit 2, nothing runs):

* the approval is in the ledger and is for this notebook on this environment and this gate;
* its key is an approver's in the environment's ``access.approvers`` and the signature checks;
* the approver is not the run's operator (and the operator is listed, when ``operators`` is);
* it has not expired;
* the plan hash of the notebook, parameters and environment file now equals the approved one;
* no real run in the ledger used it yet: an approval is used once, by the run whose step it let
  through its gate (a run's ledger entry names those approvals, so the one read of the ledger that
  finds the approval also finds its use; a run stopped before its gated step leaves it usable).

The parameters hashed are every declared one with its value (the notebook's default where none was
given), less what the runner sets: a dry run from the CLI and a person's run in JupyterLab, whose
values the parameters cell set, then hash the same thing.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .. import journal
from ..config.environments import Environment
from ..errors import DrillbookError
from . import keys, ledger, sshsig, trust
from .archive import load_record
from .record import ApprovalInfo, PlanHash

APPROVAL = "approval"  # the ``type`` of its ledger entry
RUNNER_KEYS = ("env", "dry_run", "approve", "change", "run_id", "severity", "incident")  # set by the runner, not part of the plan
MAX_EXPIRY = timedelta(days=7)


class ApprovalRefused(DrillbookError):
    """An approval missing, invalid or no longer matching: the run does not start (exit 2)."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_hash(notebook: Path, parameters: Mapping[str, Any], environment_file: Path) -> PlanHash:
    return plan_of(_sha(notebook.read_bytes()), parameters, environment_file)


def plan_of(notebook_sha256: str, parameters: Mapping[str, Any], environment_file: Path) -> PlanHash:
    """The plan hash of a notebook known by its sha256 (a working copy's runbook, as it was copied)."""
    given = {k: v for k, v in parameters.items() if k not in RUNNER_KEYS}
    parts = {"notebook_sha256": notebook_sha256,
             "parameters_sha256": _sha(ledger.canonical(json.loads(json.dumps(given, default=str)))),
             "environment_sha256": _sha(environment_file.read_bytes())}
    return cast(PlanHash, {"sha256": _sha(ledger.canonical(parts)), **parts})


def parse_expiry(text: str) -> timedelta:
    match = re.fullmatch(r"(\d{1,4})\s*([mhd])", text.strip())
    if not match:
        raise ApprovalRefused(f"--expires {text!r} is not a duration", "write e.g. 30m, 4h or 2d")
    span = timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]: int(match.group(1))})
    if not timedelta(0) < span <= MAX_EXPIRY:
        raise ApprovalRefused(f"--expires {text} is outside 1 minute to {MAX_EXPIRY.days} days")
    return span


def approvers(env: Environment, project: Path) -> dict[str, tuple[str, Ed25519PublicKey]]:
    """Fingerprint → (name, key) of the environment's approvers."""
    found = {}
    for approver in env.access.approvers:
        public = sshsig.load_public(approver.key, project, approver.name)
        found[trust.fingerprint(public)] = (approver.name, public)
    return found


# --------------------------------------------------------------------------- approving
@dataclass(frozen=True)
class Signer:
    """The approver's key: a private key file signed in process, or an SSH key signed by ssh-keygen."""

    public: Ed25519PublicKey
    path: Path
    ssh_keygen: bool

    def sign(self, message: bytes) -> tuple[str, str]:
        if self.ssh_keygen:
            return "sshsig", sshsig.sign_with_ssh_keygen(self.path, message)
        return "ed25519", keys.sign(sshsig.load_private(self.path), message)


def signer(key: Path | None, ssh_key: Path | None) -> Signer:
    if (key is None) == (ssh_key is None):
        raise ApprovalRefused("give the approver's key: --key PEM_OR_OPENSSH_PRIVATE_KEY or --ssh-key PRIVATE_KEY",
                              "your own key, never the archive's signing key")
    if key is not None:
        return Signer(sshsig.load_private(key).public_key(), key, False)
    assert ssh_key is not None
    public_file = Path(f"{ssh_key}.pub")
    try:
        text = public_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise ApprovalRefused(f"no public key {public_file} beside {ssh_key}", "ssh-keygen -y -f KEY > KEY.pub") from None
    return Signer(sshsig.load_public(text, Path("."), str(ssh_key)), ssh_key, True)


def approve(archive: Path, project: Path, env: Environment, dry_run_id: str, gate: str, by: Signer,
            expires: timedelta, now: datetime | None = None) -> tuple[dict[str, Any], str | None]:
    """Sign and enter an approval; (the document with its id, the approver's name or None if unlisted)."""
    record = load_record(archive, dry_run_id)
    plan = record.get("plan")
    if not record.get("dry_run") or not plan:
        raise ApprovalRefused(f"run {dry_run_id} is not a dry run with a plan", "approve the dry run of what will run")
    gates = sorted({str(s.get("gate")) for s in record.get("steps") or [] if s.get("mutating") and s.get("gate")})
    if gate not in gates:
        raise ApprovalRefused(f"dry run {dry_run_id} has no mutating step behind gate {gate!r}",
                              f"its gates: {', '.join(gates) or 'none'}")
    now = now or datetime.now(timezone.utc)
    fingerprint = trust.fingerprint(by.public)
    name = approvers(env, project).get(fingerprint, (None, None))[0]
    doc = {"dry_run": dry_run_id, "drill": record.get("drill"), "env": record.get("env"), "gate": gate,
           "plan": plan, "approver": name, "key_fingerprint": fingerprint,
           "approved_at": trust.journal_text(now), "expires_at": trust.journal_text(now + expires)}
    doc["id"] = "apv-" + _sha(ledger.canonical(doc))[:16]
    fmt, signature = by.sign(ledger.canonical(doc))
    signing_key = keys.load_or_create_signing_key()
    ledger.append_event(archive, signing_key, {"type": APPROVAL, "approval": doc, "sig_format": fmt,
                                               "approver_sig": signature})
    return doc, name


# --------------------------------------------------------------------------- checking a run
def find(archive: Path, approval_id: str) -> dict[str, Any]:
    return lookup(archive, approval_id)[0]


def lookup(archive: Path, approval_id: str) -> tuple[dict[str, Any], str | None]:
    """The approval's ledger entry and the real run that used it (None: unused), in one read of the ledger."""
    found, used = None, None
    for entry in ledger.read_entries(archive):
        if entry.get("type") == APPROVAL and isinstance(entry.get("approval"), dict) \
                and entry["approval"].get("id") == approval_id:
            found = found or entry
        elif not entry.get("dry_run") and approval_id in (entry.get("approvals") or ()):
            used = used or str(entry.get("run_id"))
    if found is None:
        raise ApprovalRefused(f"approval {approval_id} is not in the ledger", "drillbook approve DRY_RUN_ID --gate NAME")
    return found, used


def unused(archive: Path, approval_id: str) -> dict[str, Any]:
    """The approval's entry, if no real run used it yet (an approval is used once)."""
    entry, used = lookup(archive, approval_id)
    if used:
        raise ApprovalRefused(f"approval {approval_id} was already used by run {used}",
                              "an approval is used once: dry-run again and have that approved")
    return entry


def _changed(approved: Mapping[str, Any], now: PlanHash) -> str | None:
    for part, what in (("notebook_sha256", "the notebook changed"), ("parameters_sha256", "the parameters differ"),
                       ("environment_sha256", "the environment file changed")):
        if approved.get(part) != now[part]:
            return what
    return None if approved.get("sha256") == now["sha256"] else "the plan differs"


def check(entry: dict[str, Any], *, drill: str, env: Environment, project: Path, plan: PlanHash, operator: str,
          now: datetime | None = None) -> ApprovalInfo:
    """The approval of ``entry`` if it lets this run through its gate; ApprovalRefused naming why not."""
    doc = entry["approval"]
    aid = doc.get("id")
    if (doc.get("drill"), doc.get("env")) != (drill, env.name):
        raise ApprovalRefused(f"approval {aid} is for {doc.get('drill')} on {doc.get('env')}, not {drill} on {env.name}")
    listed = approvers(env, project).get(str(doc.get("key_fingerprint")))
    if listed is None:
        raise ApprovalRefused(f"approval {aid} is signed by key {doc.get('key_fingerprint')}, which is not an approver "
                              f"of environment {env.name!r}", "access.approvers in the environment file lists them")
    name, public = listed
    if not sshsig.verify(public, ledger.canonical(doc), str(entry.get("sig_format")), str(entry.get("approver_sig"))):
        raise ApprovalRefused(f"approval {aid}: the approver's signature does not check")
    user = operator.split("@", 1)[0]
    if name in (user, operator):
        raise ApprovalRefused(f"approval {aid} was given by {name}, the operator of this run: four eyes need another approver")
    if env.access.operators and user not in env.access.operators and operator not in env.access.operators:
        raise ApprovalRefused(f"{user} is not an operator of environment {env.name!r} (access.operators)")
    try:
        expires = journal.parse_iso(str(doc.get("expires_at")))
    except ValueError:
        raise ApprovalRefused(f"approval {aid} has no valid expiry") from None
    if (now or datetime.now(timezone.utc)) > expires:
        raise ApprovalRefused(f"approval {aid} expired at {doc.get('expires_at')}", "approve a fresh dry run")
    changed = _changed(doc.get("plan") or {}, plan)
    if changed:
        raise ApprovalRefused(f"approval {aid} no longer matches: {changed} since dry run {doc.get('dry_run')}",
                              "dry-run what you mean to run, and have that approved")
    return cast(ApprovalInfo, {"id": aid, "gate": doc.get("gate"), "dry_run": doc.get("dry_run"), "approver": name,
                               "key_fingerprint": doc.get("key_fingerprint"), "plan_sha256": plan["sha256"],
                               "approved_at": doc.get("approved_at"), "expires_at": doc.get("expires_at")})


def authorize(archive: Path, project: Path, ids: list[str], *, drill: str, env: Environment, notebook: Path | None,
              parameters: Mapping[str, Any], operator: str, dry_run: bool,
              plan: PlanHash | None = None) -> list[ApprovalInfo]:
    """Every approval given, checked; a real run on an environment requiring approval needs one."""
    if not ids:
        if env.production and not dry_run:
            raise ApprovalRefused(f"environment {env.name!r} requires an approval for a real run (four eyes)",
                                  f"dry-run it, have an approver run drillbook approve DRY_RUN_ID --gate NAME, "
                                  "then pass --approval ID")
        return []
    if plan is None:
        assert notebook is not None, "a plan or the notebook it is of"
        plan = plan_hash(notebook, parameters, Path(env.source))
    checked = [check(find(archive, aid) if dry_run else unused(archive, aid), drill=drill, env=env, project=project,
                     plan=plan, operator=operator) for aid in ids]
    return checked


def approval_for(approval_id: str, gate: str, *, drill: str, env: Environment, notebook: Path | None,
                 parameters: Mapping[str, Any], operator: str, archive: Path, project: Path,
                 plan: PlanHash | None = None) -> ApprovalInfo:
    """For a gate panel (JupyterLab): the approval ``approval_id`` if it opens ``gate`` of this run now
    (``plan``: the run's own plan hash, when it is not the notebook file's; see ``runner/personplan.py``)."""
    info = authorize(archive, project, [approval_id], drill=drill, env=env, notebook=notebook,
                     parameters=parameters, operator=operator, dry_run=False, plan=plan)[0]
    if info["gate"] != gate:
        raise ApprovalRefused(f"approval {approval_id} opens gate {info['gate']!r}, not {gate!r}")
    return info
