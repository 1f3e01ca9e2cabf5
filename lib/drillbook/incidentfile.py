"""The incident a run serves: its severity (P0–P3), its id, and ``incident.json``.

A per-incident working copy of a runbook carries ``incident.json`` next to it::

    {"runbook": "postgres-failover", "env": "prod", "severity": "P1", "incident": "INC-42",
     "source_sha256": "…"}

``drillbook.start()`` in a kernel whose working directory holds one takes the environment,
severity and incident id from it. Everything in it is untrusted input: bounded, typed, validated.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .config.environments import validate_environment_name
from .errors import DrillbookError
from .evidence.record import SEVERITIES

INCIDENT_FILE = "incident.json"
INCIDENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_BYTES = 64 * 1024


class IncidentError(DrillbookError):
    """A severity, an incident id or an ``incident.json`` that cannot be used."""


def validate_severity(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.strip().upper() not in SEVERITIES:
        raise IncidentError(f"bad severity {str(value)[:40]!r}", "use one of P0, P1, P2, P3")
    return value.strip().upper()


def validate_incident(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not INCIDENT_ID.fullmatch(value):
        raise IncidentError(f"bad incident id {str(value)[:80]!r}",
                            "use 1 to 64 letters, digits, dots, dashes or underscores, e.g. INC-42")
    return value


@dataclass(frozen=True)
class IncidentFile:
    runbook: str | None
    env: str | None
    severity: str | None
    incident: str | None
    source_sha256: str | None


def _text(raw: dict[str, object], key: str, path: Path) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise IncidentError(f"{path.name}: {key} must be a string")
    return value


def load_incident_file(folder: Path) -> IncidentFile | None:
    """``folder/incident.json`` validated, or None when there is none."""
    path = folder / INCIDENT_FILE
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IncidentError(f"cannot read {path.name}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise IncidentError(f"{path.name} is larger than {MAX_BYTES} bytes", "it holds five short fields")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise IncidentError(f"{path.name} is not valid JSON", "recreate the working copy") from None
    if not isinstance(raw, dict):
        raise IncidentError(f"{path.name} must hold a JSON object")
    env = _text(raw, "env", path)
    runbook = _text(raw, "runbook", path)
    if runbook is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", runbook):
        raise IncidentError(f"{path.name}: bad runbook name {runbook[:80]!r}")
    return IncidentFile(runbook=runbook, env=validate_environment_name(env) if env else None,
                        severity=validate_severity(raw.get("severity")), incident=validate_incident(raw.get("incident")),
                        source_sha256=_text(raw, "source_sha256", path))
