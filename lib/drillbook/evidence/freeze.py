"""The kill switch: an environment (or every one) frozen during an outage, until it is thawed.

    <archive>/freeze/<env>.json          one per frozen environment ({reason, by, at})
    <archive>/freeze/ALL.json            ``drillbook freeze --all`` (names are lower-case: no clash)
    <archive>/freeze/skipped/<…>.json    a scheduled run that did not start because of a freeze

It lives with the archive, not in a machine's local state, so every runner that writes this
archive (cron on several machines, Airflow workers) sees the same freeze. One object per scope
means freeze and thaw never read-modify-write a shared file: two operators freezing two
environments at once cannot lose each other's freeze. Storage goes through ``_put``, ``_get``,
``_delete`` and ``_names`` only, the seam an object-store archive implements.

Fail safe: a freeze file that cannot be read still freezes its scope.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .. import files, paths
from ..config.environments import validate_environment_name
from ..errors import ConfigError, Frozen
from ..journal import now_iso

FOLDER = "freeze"
ALL = "ALL"
SKIPPED = "skipped"
MAX_REASON = 500


@dataclass(frozen=True)
class Freeze:
    scope: str  # an environment's name, or ALL
    reason: str
    by: str
    at: str  # ISO time, UTC

    def describe(self) -> str:
        where = "all environments are" if self.scope == ALL else f"environment {self.scope!r} is"
        return f"{where} frozen by {self.by} since {self.at}: {self.reason}"


# ----------------------------------------------------------------------------- storage seam
def _put(archive: Path, name: str, text: str) -> None:
    files.write_atomic(archive / FOLDER / name, text, mode=0o644)


def _get(archive: Path, name: str) -> str | None:
    try:
        return (archive / FOLDER / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _delete(archive: Path, name: str) -> bool:
    try:
        (archive / FOLDER / name).unlink()
        return True
    except FileNotFoundError:
        return False


def _names(archive: Path, folder: str = "") -> list[str]:
    directory = archive / FOLDER / folder
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))  # not a temp file


# ----------------------------------------------------------------------------- freeze and thaw
def _scope(env: str | None) -> str:
    return ALL if env is None else validate_environment_name(env)


def _clean_reason(reason: str) -> str:
    text = " ".join(str(reason).split())
    if not text:
        raise ConfigError("a freeze needs a reason", 'pass --reason "what is going on" (it is shown to everyone)')
    if len(text) > MAX_REASON:
        raise ConfigError(f"the reason is {len(text)} characters long; at most {MAX_REASON}",
                          "say it in a sentence; link the incident for the rest")
    return text


def freeze(env: str | None, reason: str, by: str, archive: Path | None = None) -> Freeze:
    """Freeze ``env`` (None: every environment) for ``reason``, said by ``by``. Freezing a frozen
    scope again replaces its reason. Running drills there see it within a second or two and are
    interrupted (see ``watcher``); new ones are refused until ``thaw``."""
    archive = archive or paths.archive_root()
    found = Freeze(_scope(env), _clean_reason(reason), " ".join(str(by).split())[:200] or "unknown", now_iso())
    _put(archive, f"{found.scope}.json", json.dumps(asdict(found), indent=1))
    return found


def thaw(env: str | None, archive: Path | None = None) -> list[Freeze]:
    """Lift the freeze of ``env``, or with None every freeze (the --all one and each environment's).
    Returns what was lifted."""
    archive = archive or paths.archive_root()
    lifted = [f for f in active(archive) if env is None or f.scope == _scope(env)]
    return [f for f in lifted if _delete(archive, f"{f.scope}.json")]


def _readable(archive: Path | None) -> Path | None:
    """Where to look for freezes: ``archive``, else the project's archive when it is a folder. Freezes
    are kept with a folder archive only: with an ``s3://`` archive there are none to find (and
    ``freeze`` itself refuses, with the reason)."""
    if archive is not None:
        return archive
    from .store import project_archive

    where = project_archive()
    return where if isinstance(where, Path) else None


def _parse(name: str, text: str) -> Freeze:
    scope = name[: -len(".json")]
    try:
        data = json.loads(text)
        return Freeze(scope, str(data["reason"])[:MAX_REASON], str(data["by"])[:200], str(data["at"])[:40])
    except (ValueError, KeyError, TypeError):
        return Freeze(scope, "the freeze file cannot be read (still frozen: thaw to lift it)", "unknown", "unknown")


def active(archive: Path | None = None) -> list[Freeze]:
    """Every freeze in force: ALL first, then by environment."""
    archive = _readable(archive)
    if archive is None:
        return []
    found = []
    for name in _names(archive):
        if name.endswith(".json") and (name == f"{ALL}.json" or re.fullmatch(r"[a-z0-9][a-z0-9_-]*\.json", name)):
            text = _get(archive, name)
            if text is not None:
                found.append(_parse(name, text))
    return sorted(found, key=lambda f: (f.scope != ALL, f.scope))


def frozen(env: str, archive: Path | None = None) -> Freeze | None:
    """The freeze that stops ``env``, if any (the --all one first)."""
    archive = _readable(archive)
    if archive is None:
        return None
    for scope in (ALL, validate_environment_name(env)):
        text = _get(archive, f"{scope}.json")
        if text is not None:
            return _parse(f"{scope}.json", text)
    return None


def refuse_if_frozen(env: str, archive: Path | None = None) -> None:
    """Raise ``Frozen`` (one line, exit 3) when ``env`` is frozen."""
    found = frozen(env, archive)
    if found is not None:
        thaw_hint = "--all" if found.scope == ALL else f"--env {found.scope}"
        raise Frozen(f"not started: {found.describe()} (drillbook thaw {thaw_hint} lifts it)", "")


# ----------------------------------------------------------------------------- skips and running drills
def record_skip(drill: str, env: str, scheduler: str, found: Freeze, archive: Path | None = None) -> str:
    """Note that ``scheduler`` (``run --due``, ``airflow``) did not start ``drill`` on ``env``
    because of ``found``; returns the entry's name."""
    archive = archive or paths.archive_root()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{stamp}-{re.sub(r'[^A-Za-z0-9_-]+', '-', drill)[:40]}-{env}-{secrets.token_hex(3)}.json"
    entry = {"status": "frozen", "drill": drill, "env": env, "scheduler": scheduler, "at": now_iso(),
             "freeze": asdict(found)}
    _put(archive, f"{SKIPPED}/{name}", json.dumps(entry, indent=1))
    return name


def skipped(archive: Path | None = None) -> list[dict[str, object]]:
    """The recorded skips, oldest first (unreadable ones are left out)."""
    archive = _readable(archive)
    if archive is None:
        return []
    found = []
    for name in _names(archive, SKIPPED):
        try:
            found.append(json.loads(_get(archive, f"{SKIPPED}/{name}") or ""))
        except ValueError:
            continue
    return found


def watcher(env: str, archive: Path, every: float = 1.0) -> Callable[[], str | None]:
    """A check for the runner's supervisor: the freeze's description once ``env`` is frozen, else
    None. It looks at most every ``every`` seconds (the supervisor ticks ten times a second)."""
    last = [0.0]

    def check() -> str | None:
        now = time.monotonic()
        if now - last[0] < every:
            return None
        last[0] = now
        try:
            found = frozen(env, archive)
        except OSError:
            return None  # an archive out of reach for a moment must not stop a drill
        return found.describe() if found is not None else None

    return check
