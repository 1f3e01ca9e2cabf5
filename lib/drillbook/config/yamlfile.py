"""The one way drillbook reads YAML: bounded in size and depth, no aliases, one-line errors.

Environment files and ``parameters/schedule.yaml`` are written by people and may come from
anywhere (a pull request, a copied example). Plain ``yaml.safe_load`` would let a few hundred
bytes of nested anchors and aliases expand into gigabytes once anything walks the result, so:

* a file larger than ``MAX_BYTES`` is refused before it is parsed;
* an alias (``*name``) is refused outright: nothing drillbook ships uses one, and an alias is
  only ever a shorthand, so the value can always be written out in full;
* nesting deeper than ``MAX_DEPTH`` is refused (deep nesting would otherwise end in a
  ``RecursionError`` inside the parser);
* bytes that are not UTF-8, and YAML syntax errors, become a ``ConfigError`` naming the file and line.

``dump_yaml`` writes YAML that this reader accepts (it never emits anchors).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

MAX_BYTES = 256 * 1024  # environment files and schedules are a few kilobytes
MAX_DEPTH = 64  # the schema needs about six levels; parameters may nest a little more


class RefusedYAML(yaml.YAMLError):
    """YAML that is well formed but refused (an alias, or too deep), with where it starts."""

    def __init__(self, problem: str, hint: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem, self.hint, self.problem_mark = problem, hint, mark


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` whose composer refuses aliases and bounds nesting.

    The pure-Python loader, not the libyaml one: only its composer can be overridden, and a
    file of at most ``MAX_BYTES`` parses quickly enough either way.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RefusedYAML(
                f"YAML alias *{event.anchor} is not allowed",
                "write the value out in full where the alias stands: drillbook refuses aliases "
                "because a few of them can expand a small file into gigabytes",
                event.start_mark,
            )
        if self._depth >= MAX_DEPTH:
            raise RefusedYAML(f"nested more than {MAX_DEPTH} levels deep", "flatten the structure",
                              self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # the same object twice is written out twice: _Loader refuses aliases


def load_text(text: str) -> Any:
    """Parse YAML text; raises ``yaml.YAMLError`` (``RefusedYAML`` for aliases and deep nesting)."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def _read_text(path: Path, what: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)  # never more, whatever the file claims to be
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: the {what} is larger than {MAX_BYTES // 1024} KiB, the most drillbook reads",
                          f"check that this is the right file: a {what} is a few kilobytes of YAML")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x})",
                          "save the file as UTF-8 (the encoding YAML requires)") from None


def _where(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f":{mark.line + 1}:{mark.column + 1}"
    if isinstance(exc, yaml.reader.ReaderError):  # bad characters are reported by offset
        return f":{text.count(chr(10), 0, exc.position) + 1}"
    return ""


def read_yaml(path: Path, what: str) -> Any:
    """The parsed contents of ``path`` (``what`` names it in errors: "environment file", …)."""
    text = _read_text(path, what)
    try:
        return load_text(text)
    except RefusedYAML as exc:
        raise ConfigError(f"{path}{_where(exc, text)}: {exc.problem} in the {what}", exc.hint) from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(f"{path}{_where(exc, text)}: the {what} contains the unacceptable character "
                          f"#x{exc.character:04x}", "remove control characters: YAML text must be printable") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{_where(exc, text)}: malformed YAML: {problem}",
                          "fix the YAML at that line (indentation, quotes, brackets)") from None
