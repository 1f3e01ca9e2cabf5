"""Secret references (``env:NAME``, ``file:PATH``) and the redactor that keeps their values out of evidence.

A secret reference is what environments, parameters and records hold. The value is resolved
only where it is used (inside the kernel, or in memory by the runner to know what to scrub),
and never written anywhere: every byte that reaches the archive passes through ``Redactor``.
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from ..errors import SecretError

REF_PATTERN = re.compile(r"^(env|file):(.+)$")
MIN_SECRET_LENGTH = 4  # shorter values cannot be scrubbed without mangling ordinary text
MAX_SECRET_BYTES = 1024 * 1024  # a password, token or private key; anything larger is the wrong file
# Shorter base64 fragments would match by chance inside images' base64 and corrupt them.
MIN_BASE64_CORE = 12


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


def _text_encodings(value: str) -> set[str]:
    """``value`` as the notebook's own code may write it into an output, a log or an attachment:
    JSON strings (ASCII-only or not), Python reprs (tracebacks), URL-encoded (DSNs, query
    strings, form bodies) and HTML-escaped (``html.escape`` with and without quotes, and the
    ``&#34;``/``&#39;`` of Jinja/MarkupSafe; pandas' ``to_html`` escapes like ``quote=False``)."""
    return {
        value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1],
        quote(value, safe=""), quote(value), quote_plus(value),
        html.escape(value), html.escape(value, quote=False),
        html.escape(value, quote=False).replace('"', "&#34;").replace("'", "&#39;"),
    }


def _base64_cores(value: str) -> set[str]:
    """The base64 characters that depend on ``value`` alone, at each of the three byte
    alignments it can have inside a longer payload (``user:password`` in a Basic auth header,
    a Kubernetes secret in ``kubectl get -o yaml``), standard and URL-safe alphabets."""
    data = value.encode("utf-8")
    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data + bytes(2)).decode("ascii")
        first = -(-8 * shift // 6)  # the first character whose 6 bits all come from ``value``
        last = (8 * (shift + len(data))) // 6  # one past the last such character
        core = encoded[first:last]
        cores |= {core, core.replace("+", "-").replace("/", "_")}
    return {c for c in cores if len(c) >= MIN_BASE64_CORE}


def encoded_forms(value: str) -> set[str]:
    """Every form of ``value`` the redactor replaces: each text encoding, each encoding of an
    encoding (a repr inside a JSON log, an HTML-escaped value in a JSON notebook output) and
    the base64 of the value. Forms derived by rendering (nbconvert's HTML of ANSI text and
    highlighted code, MkDocs' Markdown) need no pattern: rendering only ever sees text that is
    already scrubbed, and the rendered page is scrubbed again."""
    forms = {outer for inner in _text_encodings(value) for outer in _text_encodings(inner)}
    return {f for f in forms | _base64_cores(value) if len(f) >= MIN_SECRET_LENGTH}


class Redactor:
    """Replaces every known secret value (and its encoded forms) with ``[REDACTED:<name>]``.

    Safe to use from several threads (the kernel scrubs its output on its I/O thread while
    cells add secrets): ``add`` replaces the table and its pattern in one assignment.
    """

    def __init__(self) -> None:
        self._table: tuple[dict[str, str], re.Pattern[str] | None] = ({}, None)

    def add(self, name: str, value: str) -> None:
        if not value:
            return
        marker = f"[REDACTED:{name}]"
        known = self._table[0]
        new = {form: marker for form in encoded_forms(value) if form not in known}
        if new:  # a secret resolved again (every connection) costs no recompilation
            forms = {**known, **new}
            self._table = (forms, _pattern(forms))

    def __bool__(self) -> bool:
        return bool(self._table[0])

    def scrub(self, text: str) -> str:
        forms, pattern = self._table
        if pattern is None or not text:
            return text
        return pattern.sub(lambda m: forms[m.group(0)], text)

    def scrub_obj(self, obj: Any) -> Any:
        """Scrub every string (keys too) inside JSON-like data; returns a new object."""
        if not self:
            return obj
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return type(obj)((self.scrub_obj(k), self.scrub_obj(v)) for k, v in obj.items())
        if isinstance(obj, list):
            return [self.scrub_obj(v) for v in obj]
        return obj


def _pattern(forms: dict[str, str]) -> re.Pattern[str] | None:
    # Longest first, so a value is never half-replaced by one of its own substrings.
    ordered = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None
