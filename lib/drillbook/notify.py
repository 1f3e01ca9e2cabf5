"""Notifications with apprise: a drill that failed or errored, an overdue schedule entry, a failed verify.

An environment names its targets under ``notify:``, each a secret reference (``env:NAME`` or
``file:PATH``) to an apprise URL (``slack://…``, ``msteams://…``, ``mailtos://…``, ``json://…``):
such URLs carry tokens, so they are secrets, resolved only here and scrubbed from everything else.

Every message is scrubbed with the run's redactor before it leaves, and names the drill, the
environment, the status, the failing check and the evidence link. A target that cannot be
reached never fails what sent it: each delivery's outcome is returned (the runner records it in
the run's record and prints the failures), named by its position (``notify[0]``), never its URL.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import paths
from .config.environments import Environment
from .config.secrets import Redactor, SecretRef
from .errors import DrillbookError

NOTIFY_STATUSES = ("failed", "error")  # aborted runs were stopped on purpose (an operator, a freeze)


@dataclass(frozen=True)
class Delivery:
    target: str  # "notify[0]" of environment X: never the URL
    ok: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    kind: str = "failure"  # apprise's notify type: info, success, warning, failure


def evidence_link(run_id: str, bundle: Path, project: Path | None = None) -> str:
    """The run's page on the published site when mkdocs.yml names a ``site_url``, else its bundle."""
    try:
        text = ((project or paths.project_root()) / "mkdocs.yml").read_text(encoding="utf-8")
    except (OSError, DrillbookError):
        text = ""
    match = re.search(r"^site_url:\s*['\"]?(https?://[^\s'\"]+)", text, re.MULTILINE)
    if match:
        return f"{match.group(1).rstrip('/')}/evidence/html/{run_id}.html"
    return str(bundle)


def failing_check(record: Mapping[str, Any]) -> str | None:
    """The first check that did not pass ("name: detail"), else the failing cell's first line."""
    for check in record.get("checks") or []:
        if not check.get("passed"):
            detail = f": {check['detail']}" if check.get("detail") else ""
            return f"{check.get('name')}{detail}"
    cell = record.get("failing_cell") or {}
    return f"cell {cell.get('index')}: {cell.get('source_first_line')}" if cell else None


def run_message(record: Mapping[str, Any], link: str) -> Message:
    drill, env, status = record["drill"], record["env"], record["status"]
    lines = [f"drill: {drill}", f"environment: {env}", f"status: {status}",
             f"failing check: {failing_check(record) or 'none recorded'}",
             f"reason: {record.get('reason') or 'none recorded'}", f"run: {record['run_id']}", f"evidence: {link}"]
    return Message(f"drillbook: {drill} on {env} {status}", "\n".join(lines))


def overdue_message(drill: str, env: str, missed: str, grace: str, last: str | None, link: str) -> Message:
    lines = [f"drill: {drill}", f"environment: {env}", "status: overdue",
             f"failing check: no run followed the firing at {missed} within {grace}",
             f"last run finished: {last or 'never'}", f"evidence: {link}"]
    return Message(f"drillbook: {drill} on {env} is overdue", "\n".join(lines), "warning")


def verify_message(archive: str, problems: list[str]) -> Message:
    shown = problems[:10]
    lines = [f"archive: {archive}", "status: verify failed", f"failing check: {shown[0] if shown else 'unknown'}",
             f"problems: {len(problems)}", *(f"  {p}" for p in shown), f"evidence: {archive}"]
    return Message("drillbook: evidence verification failed", "\n".join(lines))


def _deliver(url: str, message: Message, target: str, redactor: Redactor) -> Delivery:
    import apprise  # about 0.3 s to import, and only a failure sends anything

    client = apprise.Apprise()
    if not client.add(url):
        return Delivery(target, False, "not a URL apprise can send to")
    with apprise.LogCapture(level=logging.WARNING) as log:
        try:
            sent = client.notify(title=message.title, body=message.body, notify_type=message.kind)
        except Exception as exc:  # a plugin's bug must not fail the run either
            sent, detail = False, f"{type(exc).__name__}: {exc}"
        else:
            detail = " ".join(str(log.getvalue()).split())[-300:] or "the target refused it"
    return Delivery(target, True) if sent else Delivery(target, False, _url_parts(url).scrub(redactor.scrub(detail)))


def _url_parts(url: str) -> Redactor:
    """apprise's messages name a target by its host, user or path: all of them are parts of a
    secret URL, kept out of an error we record (only there: the host may be ordinary text elsewhere)."""
    from urllib.parse import unquote, urlsplit

    parts = Redactor()
    split = urlsplit(url)
    pieces = [split.netloc, split.hostname or "", split.username or "", split.password or "",
              *unquote(split.path).split("/"), *unquote(split.query).split("&")]
    for piece in pieces:
        if len(piece) >= 4:
            parts.add("notify-url", piece)
    return parts


def send(env: Environment, message: Message, redactor: Redactor, project: Path | None = None) -> list[Delivery]:
    """Send ``message`` (scrubbed first) to every target of ``env``; never raises."""
    refs = [(f"{env.name} notify[{i}]", ref) for i, ref in enumerate(env.notify)]
    return send_to(refs, message, redactor, project)


def send_to(refs: Iterable[tuple[str, str]], message: Message, redactor: Redactor,
            project: Path | None = None) -> list[Delivery]:
    """``send`` for (target name, secret reference) pairs gathered from anywhere."""
    project = project or paths.project_root()
    resolved: list[tuple[str, str | None, str | None]] = []
    for target, ref in refs:
        try:
            url = SecretRef.parse(ref).resolve(project)
            redactor.add(f"notify.{target}", url)  # the URL's token never shows in an error either
            resolved.append((target, url, None))
        except DrillbookError as exc:
            resolved.append((target, None, exc.message))
    clean = Message(redactor.scrub(message.title), redactor.scrub(message.body), message.kind)
    return [_deliver(url, clean, target, redactor) if url else Delivery(target, False, error)
            for target, url, error in resolved]


def notify_run(env: Environment, record: dict[str, Any], bundle: Path | str, redactor: Redactor,
               project: Path | None = None) -> None:
    """For a run that failed or errored, notify ``env``'s targets and note each delivery in
    ``record["notifications"]`` (before it is archived: the record says who was told)."""
    if record.get("status") not in NOTIFY_STATUSES or not env.notify:
        return
    link = evidence_link(record["run_id"], bundle, project)
    record["notifications"] = [d.as_dict() for d in send(env, run_message(record, link), redactor, project)]


def notify_verify(archive: Path | str, problems: list[str], project: Path | None = None) -> list[Delivery]:
    """A failed verify concerns everyone: every environment's targets (each URL once) are told."""
    from .config.environments import environment_names, load_environment

    project = project or paths.project_root()
    refs: dict[str, str] = {}
    redactor = Redactor()
    for name in environment_names(project):
        try:
            env = load_environment(name, project)
        except DrillbookError:
            continue  # a broken environment file is lint's to report, not a reason to stay silent
        for index, ref in enumerate(env.notify):
            refs.setdefault(ref, f"{name} notify[{index}]")
    return send_to([(target, ref) for ref, target in refs.items()], verify_message(str(archive), problems),
                   redactor, project)
