"""The kill switch: an environment (or every one) frozen during an outage, until it is thawed.

    <archive>/freeze/<env>.json          one per frozen environment ({reason, by, at})
    <archive>/freeze/ALL.json            ``drillbook freeze --all`` (names are lower-case: no clash)
    <archive>/freeze/skipped/<…>.json    a scheduled run that did not start because of a freeze

It lives with the archive, not in a machine's local state, so every runner that writes this
archive (cron on several machines, Airflow workers) sees the same freeze: in a folder archive as
files, in an ``s3://`` archive as objects under the same names below its prefix (with the
archive's own client and the standard AWS settings). One object per scope means freeze and thaw
never read-modify-write a shared file: two operators freezing two environments at once cannot
lose each other's freeze. Storage goes through ``_put``, ``_get``, ``_delete`` and ``_names`` only.

Fail safe, and the same for both kinds of archive: whoever can write the archive can freeze it
(a freeze is not signed: stopping drills is the safe direction, and starting one is never
possible through this folder). So a freeze file that cannot be read, is not JSON, or is not
UTF-8 still freezes its scope; a name that is not a scope's (``Prod.json``, ``x.json.tmp``, a
nested key) is no freeze; what a file says is shown as plain, bounded text (no control
characters reach a terminal), and a skip that is not an object is left out.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .. import files
from ..config.environments import validate_environment_name
from ..errors import ConfigError, EvidenceError, Frozen
from ..journal import now_iso
from .store import S3Archive, S3Store, project_archive

# Where freezes are kept: a folder archive, or the store of an S3 archive (one client per call).
Where = Path | S3Store

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
def _where(archive: Path | S3Archive | None) -> Where:
    """The archive given, else the project's (``DRILLBOOK_ARCHIVE`` or its setting)."""
    archive = archive if archive is not None else project_archive()
    return S3Store(archive) if isinstance(archive, S3Archive) else archive


def _key(store: S3Store, name: str) -> str:
    return store.archive.key(FOLDER, name)


def _put(where: Where, name: str, text: str) -> None:
    if isinstance(where, Path):
        files.write_atomic(where / FOLDER / name, text, mode=0o644)
    else:
        where.put(_key(where, name), text.encode("utf-8"))


def _get(where: Where, name: str) -> str | None:
    if isinstance(where, Path):
        try:
            data = (where / FOLDER / name).read_bytes()
        except FileNotFoundError:
            return None
    else:
        got = where.get(_key(where, name))
        if got is None:
            return None
        data = got[0]
    return data.decode("utf-8", errors="replace")  # bytes that are not text still freeze (fail safe)


def _delete(where: Where, name: str) -> bool:
    if isinstance(where, Path):
        try:
            (where / FOLDER / name).unlink()
            return True
        except FileNotFoundError:
            return False
    if where.get(_key(where, name)) is None:  # S3 deletes a missing key without a word
        return False
    where.delete([_key(where, name)])
    return True


def _names(where: Where, folder: str = "") -> list[str]:
    """The plain names directly in ``freeze/`` (or ``freeze/<folder>/``), never a temp file."""
    if isinstance(where, Path):
        directory = where / FOLDER / folder
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    base = _key(where, folder) + "/"
    inside = [key[len(base):] for key in where.list(f"{FOLDER}/{folder}/" if folder else f"{FOLDER}/")]
    return sorted(n for n in inside if n and "/" not in n and not n.startswith("."))  # no nested keys


# ----------------------------------------------------------------------------- freeze and thaw
def _scope(env: str | None) -> str:
    return ALL if env is None else validate_environment_name(env)


def _clean_reason(reason: str) -> str:
    text = _plain(reason, 100_000)  # one printable line, as every reader shows it
    if not text:
        raise ConfigError("a freeze needs a reason", 'pass --reason "what is going on" (it is shown to everyone)')
    if len(text) > MAX_REASON:
        raise ConfigError(f"the reason is {len(text)} characters long; at most {MAX_REASON}",
                          "say it in a sentence; link the incident for the rest")
    return text


def freeze(env: str | None, reason: str, by: str, archive: Path | S3Archive | None = None) -> Freeze:
    """Freeze ``env`` (None: every environment) for ``reason``, said by ``by``. Freezing a frozen
    scope again replaces its reason. Running drills there see it within a second or two and are
    interrupted (see ``watcher``); new ones are refused until ``thaw``."""
    where = _where(archive)
    found = Freeze(_scope(env), _clean_reason(reason), _plain(by, 200) or "unknown", now_iso())
    _put(where, f"{found.scope}.json", json.dumps(asdict(found), indent=1))
    return found


def thaw(env: str | None, archive: Path | S3Archive | None = None) -> list[Freeze]:
    """Lift the freeze of ``env``, or with None every freeze (the --all one and each environment's).
    Returns what was lifted."""
    where = _where(archive)
    lifted = [f for f in _active(where) if env is None or f.scope == _scope(env)]
    return [f for f in lifted if _delete(where, f"{f.scope}.json")]


def _plain(value: object, limit: int) -> str:
    """``value`` as one line of printable text, at most ``limit`` characters (what a freeze file
    says is shown on terminals and the dashboard, and anyone who can write the archive wrote it)."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return " ".join(text.split())[:limit]


def _parse(name: str, text: str) -> Freeze:
    scope = name[: -len(".json")]
    try:
        data = json.loads(text)
        return Freeze(scope, _plain(data["reason"], MAX_REASON), _plain(data["by"], 200), _plain(data["at"], 40))
    except (ValueError, KeyError, TypeError):
        return Freeze(scope, "the freeze file cannot be read (still frozen: thaw to lift it)", "unknown", "unknown")


def _active(where: Where) -> list[Freeze]:
    found = []
    for name in _names(where):
        if name.endswith(".json") and (name == f"{ALL}.json" or re.fullmatch(r"[a-z0-9][a-z0-9_-]*\.json", name)):
            text = _get(where, name)
            if text is not None:
                found.append(_parse(name, text))
    return sorted(found, key=lambda f: (f.scope != ALL, f.scope))


def active(archive: Path | S3Archive | None = None) -> list[Freeze]:
    """Every freeze in force: ALL first, then by environment."""
    return _active(_where(archive))


def _frozen(where: Where, env: str) -> Freeze | None:
    for scope in (ALL, validate_environment_name(env)):
        text = _get(where, f"{scope}.json")
        if text is not None:
            return _parse(f"{scope}.json", text)
    return None


def frozen(env: str, archive: Path | S3Archive | None = None) -> Freeze | None:
    """The freeze that stops ``env``, if any (the --all one first)."""
    return _frozen(_where(archive), env)


UNFROZEN_KINDS = ("runbook",)  # what people run to recover: a freeze stops drills, never the way back


def stops(kind: str) -> bool:
    """Whether a freeze stops a run of a notebook of ``kind``: drills and other notebooks, never a
    runbook a person runs to recover (an incident freezes its environment's drills, not its runbooks).
    Scheduled entries skip whatever they run: a freeze stops the automation."""
    return kind not in UNFROZEN_KINDS


def refuse_if_frozen(env: str, archive: Path | S3Archive | None = None) -> None:
    """Raise ``Frozen`` (one line, exit 3) when ``env`` is frozen."""
    found = frozen(env, archive)
    if found is not None:
        thaw_hint = "--all" if found.scope == ALL else f"--env {found.scope}"
        raise Frozen(f"not started: {found.describe()} (drillbook thaw {thaw_hint} lifts it)", "")


# ----------------------------------------------------------------------------- skips and running drills
def record_skip(drill: str, env: str, scheduler: str, found: Freeze, archive: Path | S3Archive | None = None) -> str:
    """Note that ``scheduler`` (``run --due``, ``airflow``) did not start ``drill`` on ``env``
    because of ``found``; returns the entry's name."""
    # Names sort oldest first: to the microsecond, so two skips in one second keep their order.
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now := time.time())) + f"{int(now % 1 * 1e6):06d}Z"
    name = f"{stamp}-{re.sub(r'[^A-Za-z0-9_-]+', '-', drill)[:40]}-{env}-{secrets.token_hex(3)}.json"
    entry = {"status": "frozen", "drill": drill, "env": env, "scheduler": scheduler, "at": now_iso(),
             "freeze": asdict(found)}
    _put(_where(archive), f"{SKIPPED}/{name}", json.dumps(entry, indent=1))
    return name


def skipped(archive: Path | S3Archive | None = None) -> list[dict[str, object]]:
    """The recorded skips, oldest first (unreadable ones, and ones that are not objects, are left
    out; their text fields are plain, bounded text)."""
    where = _where(archive)
    found: list[dict[str, object]] = []
    for name in _names(where, SKIPPED):
        try:
            entry = json.loads(_get(where, f"{SKIPPED}/{name}") or "")
        except ValueError:
            continue
        if isinstance(entry, dict):
            found.append({str(k)[:40]: _plain(v, MAX_REASON) if isinstance(v, str) else v for k, v in entry.items()})
    return found


def watcher(env: str, archive: Path | S3Archive, every: float = 1.0) -> Callable[[], str | None]:
    """A check for the runner's supervisor: the freeze's description once ``env`` is frozen, else
    None. It looks at most every ``every`` seconds (the supervisor ticks ten times a second)."""
    last = [0.0]
    where = _where(archive)  # one client for the whole run, not one per look

    def check() -> str | None:
        now = time.monotonic()
        if now - last[0] < every:
            return None
        last[0] = now
        try:
            found = _frozen(where, env)
        except (OSError, EvidenceError):
            return None  # an archive out of reach for a moment must not stop a drill
        return found.describe() if found is not None else None

    return check
