"""A run, validated before anything runs: what will run, where, with which parameters and timeout.

    prepare()      catalog entry, notebook, environment and parameters checked; every secret the
                   run could touch resolved (bad input → exit 2, nothing written)
    merge_parameters()  the environment's and the operator's values, coerced to the declared types
    build_redactor() / refresh_redactor()  what the runner scrubs from everything it archives
"""
from __future__ import annotations

import re
import secrets as pysecrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import incidentfile, journal, paths
from ..config import catalog, environments, notebooks
from ..config.environments import Environment
from ..config.secrets import Redactor, SecretRef, is_secret_ref
from ..errors import DrillbookError, NotebookError, UnreachableHost
from ..evidence.record import ApprovalInfo

DEFAULT_TIMEOUT = 1800.0


@dataclass
class RunRequest:
    target: str  # catalog name or notebook path
    env: str
    parameters: dict[str, Any] = field(default_factory=dict)  # raw values (CLI strings or YAML)
    dry_run: bool = False
    approve: list[str] = field(default_factory=list)
    change: str | None = None
    timeout: float | None = None
    wait: float = 0.0
    preflight: bool = True
    severity: str | None = None  # P0–P3, when the run serves an incident
    approved_by: str = "approve"  # how ``approve`` was given: "approve" (--approve) or "schedule"
    incident: str | None = None  # the incident's id
    approvals: list[str] = field(default_factory=list)  # approval ids (drillbook approve) for gates
    resume: str | None = None  # the run this one resumes (``resume.request_for``)
    allow_changed: bool = False  # resume although the notebook changed since (recorded)


@dataclass
class Plan:
    """A validated request: what will run, where, with which parameters."""

    path: Path
    name: str
    entry: catalog.Entry | None
    env: Environment
    parameters: dict[str, Any]
    redactor: Redactor
    run_id: str
    timeout: float
    request: RunRequest
    kernel_name: str
    scrub_parameters: dict[str, Any] = field(default_factory=dict)  # with defaults: what the redactor resolved
    approvals: list[ApprovalInfo] = field(default_factory=list)  # checked ones: the record carries them


def new_run_id(name: str, env: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "notebook"
    return f"{stamp}-{slug}-{env}-{pysecrets.token_hex(3)}"


def _secret_refs(env: Environment, parameters: dict[str, Any]) -> dict[str, SecretRef]:
    """The environment's secret references and those among the run's parameter values
    (``parameters`` includes the notebook's own defaults: a default may be a reference too)."""
    refs = dict(env.secret_refs())
    refs.update({f"parameters.{k}": SecretRef.parse(v) for k, v in parameters.items() if is_secret_ref(v)})
    return refs


def with_defaults(declared: dict[str, notebooks.Parameter], parameters: dict[str, Any]) -> dict[str, Any]:
    return {**{name: p.default for name, p in declared.items()}, **parameters}


def build_redactor(env: Environment, parameters: dict[str, Any], project: Path) -> Redactor:
    """Resolve every secret the run could touch, in memory, so the runner knows what to scrub.

    A secret that cannot be resolved is bad input: the run could not be proven leak-free.
    """
    redactor = Redactor()
    for name, ref in _secret_refs(env, parameters).items():
        redactor.add(name, ref.resolve(project))
    return redactor


def _child_parameters(attachments: Path) -> dict[str, Any]:
    """Parameters (given and default) of the notebooks a drill ran as children: they may hold
    secret references the parent never saw."""
    found: dict[str, Any] = {}
    for path in sorted(attachments.glob("*.ipynb")) if attachments.is_dir() else []:
        try:
            nb = notebooks.read_notebook(path)
            declared = notebooks.declared_parameters(nb, path.name)
        except DrillbookError:
            continue
        given = nb.metadata.get("papermill", {}).get("parameters", {})
        found.update({f"{path.stem}.{k}": v for k, v in with_defaults(declared, given).items()})
    return found


def refresh_redactor(redactor: Redactor, env: Environment, parameters: dict[str, Any], project: Path,
                     attachments: Path | None = None, kernel_journal: dict[str, Any] | None = None) -> None:
    """Add the secrets' values as they are now: a rotation drill changes them during the run,
    and both the old and the new value must be scrubbed; so must child notebooks' secrets and
    those a cell resolved with ``drill.secret`` (the kernel journals their references)."""
    if attachments is not None:
        parameters = {**parameters, **_child_parameters(attachments)}
    refs = _secret_refs(env, parameters)
    for text in journal.secret_refs(kernel_journal):
        try:
            refs.setdefault(text, SecretRef.parse(text))
        except DrillbookError:
            continue  # not a reference: the kernel never resolved it either
    for name, ref in refs.items():
        try:
            redactor.add(name, ref.resolve(project))
        except DrillbookError:
            pass  # gone after the run (e.g. a scratch secret): its old value is still scrubbed


def merge_parameters(request: RunRequest, declared: dict[str, notebooks.Parameter], name: str,
                      env: Environment, path: Path) -> dict[str, Any]:
    """The values the notebook gets: the environment's for notebook ``name``, then the operator's
    (``-p``, which win), each coerced to its declared type; then what the runner sets itself
    (env, dry_run, approve, change), for the names the notebook declares. An undeclared name, or
    one the runner sets, is bad input."""
    runner = {"env": env.name, "dry_run": request.dry_run, "approve": list(request.approve),
              "change": request.change}
    values: dict[str, Any] = {}
    for origin, given in ((f"environment {env.name}", env.parameters.get(name, {})), ("-p", request.parameters)):
        for key, raw in given.items():
            if key not in declared:
                raise NotebookError(
                    f"{path.name} declares no parameter {key!r} (given by {origin})",
                    f"declared parameters: {', '.join(declared) or 'none'}",
                )
            if key in runner:
                raise NotebookError(f"parameter {key!r} is set by the runner",
                                    "use --env, --dry-run, --approve or --change instead")
            values[key] = notebooks.coerce_parameter(declared[key], raw, origin)
    # Only inject what the notebook declares: plain papermill notebooks need not know drillbook.
    values.update({k: v for k, v in runner.items() if k in declared})
    return values


def preflight(env: Environment) -> None:
    """Refuse to start when an SSH host of the environment does not even accept a TCP connection.

    Cheap and early: a run that cannot reach its hosts would only produce an error record.
    Skippable (``--skip-preflight``) for incident runbooks meant to work around a dead host.
    """
    for name, host in env.hosts.items():
        if host.shell != "ssh" or host.optional:
            continue
        try:
            socket.create_connection((host.address, host.port), timeout=min(host.connect_timeout, 5.0)).close()
        except OSError as exc:
            raise UnreachableHost(
                f"host {name} ({host.address}:{host.port}) of environment {env.name!r} is unreachable: "
                f"{exc.strerror or exc}",
                "check that the host is up (for the lab: drillbook lab up), or pass --skip-preflight "
                "to run anyway and record the failure as evidence",
            ) from None


def prepare(request: RunRequest, project: Path | None = None) -> Plan:
    project = project or paths.project_root()
    request.severity = incidentfile.validate_severity(request.severity)
    request.incident = incidentfile.validate_incident(request.incident)
    path, entry = catalog.find(request.target, project)
    nb = notebooks.read_notebook(path)
    declared = notebooks.declared_parameters(nb, path.name)
    env = environments.load_environment(request.env, project)
    name = entry.name if entry else path.stem
    parameters = merge_parameters(request, declared, name, env, path)
    scrub_parameters = with_defaults(declared, parameters)
    redactor = build_redactor(env, scrub_parameters, project)
    if request.preflight:
        preflight(env)
    run_id = new_run_id(name, env.name)
    if "run_id" in declared:
        parameters["run_id"] = run_id
    for known in ("severity", "incident"):  # a notebook that declares them hears them
        if known in declared and getattr(request, known):
            parameters[known] = getattr(request, known)
    timeout = request.timeout or (entry.meta.timeout_seconds if entry else DEFAULT_TIMEOUT)
    kernel_name = nb.metadata.get("kernelspec", {}).get("name") or "python3"
    plan = Plan(path, name, entry, env, parameters, redactor, run_id, float(timeout), request, kernel_name,
                scrub_parameters)
    authorize(plan, project)
    return plan


def _ledger_folder(project: Path) -> Path:
    """Where the approvals are read: the archive's folder, or a local copy of an S3 archive's ledger."""
    from ..evidence.store import project_archive

    where = project_archive(project)
    if isinstance(where, Path):
        return where
    from ..evidence import remote  # boto3: only for an archive on object storage

    return remote.sync_ledger(where, paths.state_dir(project))


def authorize(plan: Plan, project: Path) -> None:
    """Check the run's approvals (``evidence/approvals.py``) and open the gates they approve; a real run
    on an environment requiring approval without a valid one is refused here, before anything runs."""
    from ..evidence import approvals  # cryptography: only when a run is prepared

    request = plan.request
    plan.approvals = approvals.authorize(
        _ledger_folder(project), project, list(request.approvals), drill=plan.name, env=plan.env,
        notebook=plan.path, parameters=plan.scrub_parameters, operator=journal.operator_name(), dry_run=request.dry_run)
    for approval in plan.approvals:
        if approval["gate"] not in request.approve:
            request.approve.append(approval["gate"])
    if "approve" in plan.parameters:
        plan.parameters["approve"] = list(request.approve)
