"""Secret references (``env:NAME``, ``file:PATH``) and the redactor that keeps their values out of evidence.

A secret reference is what environments, parameters and records hold. The value is resolved
only where it is used (inside the kernel, or in memory by the runner to know what to scrub),
and never written anywhere: every byte that reaches the archive passes through ``Redactor``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import SecretError

REF_PATTERN = re.compile(r"^(env|file):(.+)$")
MIN_SECRET_LENGTH = 4  # shorter values cannot be scrubbed without mangling ordinary text
MAX_SECRET_BYTES = 1024 * 1024  # a password, token or private key; anything larger is the wrong file


@dataclass(frozen=True)
class SecretRef:
    scheme: str  # "env" or "file"
    target: str  # variable name or path

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        match = REF_PATTERN.match(text.strip()) if isinstance(text, str) else None
        if not match:
            raise SecretError(
                f"not a secret reference: {text!r}",
                "write env:VARIABLE_NAME or file:/path/to/secret",
            )
        scheme, target = match.groups()
        if scheme == "env" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", target):
            raise SecretError(f"bad environment variable name in secret reference {text!r}")
        return cls(scheme, target)

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"

    def path(self, base: Path | None = None) -> Path:
        path = Path(os.path.expanduser(self.target))
        return path if path.is_absolute() or base is None else base / path

    def resolve(self, base: Path | None = None) -> str:
        """The secret's value. ``base`` anchors relative ``file:`` paths (the project root)."""
        if self.scheme == "env":
            value = os.environ.get(self.target)
            if value is None:
                raise SecretError(
                    f"secret {self} is not set",
                    f"export {self.target}=… in the environment that runs drillbook",
                )
        else:
            path = self.path(base)
            try:
                with open(path, "rb") as handle:
                    data = handle.read(MAX_SECRET_BYTES + 1)  # never more: the path may name /dev/zero
            except OSError as exc:
                # Secrets under .lab/ are created by the embedded lab: a missing one means it is not up.
                in_lab = Path(self.target).parts[:1] == (".lab",)
                raise SecretError(
                    f"secret {self} cannot be read: {exc.strerror or exc}",
                    "the lab is not set up here: run `drillbook lab up` first" if in_lab
                    else "create the file (mode 0600) or fix the path in the environment file",
                ) from None
            if len(data) > MAX_SECRET_BYTES:
                raise SecretError(f"secret {self} is larger than {MAX_SECRET_BYTES // 1024} KiB",
                                  "check the path: a secret file holds one password, token or key")
            value = data.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
        try:
            # Evidence is UTF-8 text, so a value that is not could be neither written nor scrubbed.
            # os.environ decodes undecodable bytes as surrogates, as the file branch does above.
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SecretError(
                f"secret {self} is not UTF-8 text (a binary file or a mis-encoded variable?)",
                "store the secret as UTF-8 text, e.g. base64-encode binary key material",
            ) from None
        if len(value) < MIN_SECRET_LENGTH:
            raise SecretError(
                f"secret {self} is shorter than {MIN_SECRET_LENGTH} characters",
                "use a longer secret; short values cannot be redacted from evidence safely",
            )
        return value


def is_secret_ref(value: Any) -> bool:
    return isinstance(value, str) and REF_PATTERN.match(value) is not None


class Redactor:
    """Replaces every known secret value (and its escaped forms) with ``[REDACTED:<name>]``."""

    def __init__(self) -> None:
        self._forms: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None

    def add(self, name: str, value: str) -> None:
        if not value:
            return
        marker = f"[REDACTED:{name}]"
        # The same value can appear JSON-escaped, repr-escaped or URL-encoded (DSNs, tracebacks).
        for form in {value, json.dumps(value)[1:-1], repr(value)[1:-1], quote(value, safe="")}:
            if len(form) >= MIN_SECRET_LENGTH:
                self._forms.setdefault(form, marker)
        self._pattern = None

    def __bool__(self) -> bool:
        return bool(self._forms)

    def _compiled(self) -> re.Pattern[str]:
        if self._pattern is None:
            # Longest first, so a value is never half-replaced by one of its own substrings.
            forms = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(f) for f in forms))
        return self._pattern

    def scrub(self, text: str) -> str:
        if not self._forms or not text:
            return text
        return self._compiled().sub(lambda m: self._forms[m.group(0)], text)

    def scrub_obj(self, obj: Any) -> Any:
        """Scrub every string (keys too) inside JSON-like data; returns a new object."""
        if not self._forms:
            return obj
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return type(obj)((self.scrub_obj(k), self.scrub_obj(v)) for k, v in obj.items())
        if isinstance(obj, list):
            return [self.scrub_obj(v) for v in obj]
        return obj
