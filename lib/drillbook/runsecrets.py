"""The secrets of one run, as the drill's redactor learns them: every secret the environment names,
up front, and each secret a step asks for by its name or by a raw ``env:``/``file:`` reference.

Only references and redactor labels leave this module; a value goes to the redactor and to the
step that asked for it, nowhere else.
"""
from __future__ import annotations

from pathlib import Path

from .config.environments import Environment
from .config.secrets import Redactor, SecretRef
from .errors import DrillbookError, NotFound


def learn(redactor: Redactor, env: Environment, project: Path) -> None:
    """Learn the environment's secret values up front, so everything this kernel prints or
    journals is scrubbed even before (or without) a ``secret()`` call. A secret missing here
    is reported by ``secret()`` when a step needs it."""
    for name, ref in env.secret_refs().items():
        try:
            redactor.add(name, ref.resolve(project))
        except DrillbookError:
            pass


def lookup(env: Environment, name_or_ref: str) -> tuple[str, SecretRef]:
    """The redactor's label and the reference of a secret named in ``env``, or of a raw reference;
    ``NotFound`` (listing the names ``env`` knows) when it is neither."""
    refs = env.secret_refs()
    if name_or_ref in refs:
        return name_or_ref, refs[name_or_ref]
    try:
        ref = SecretRef.parse(name_or_ref)
    except DrillbookError:
        known = ", ".join(sorted(refs)) or "none"
        raise NotFound(f"environment {env.name!r} has no secret {name_or_ref!r}",
                       f"known secrets: {known}") from None
    return str(ref), ref
