"""A fake shell for the fault library's unit tests: answers commands by pattern, records them all."""
from __future__ import annotations

import re
from typing import Callable, Sequence

from drillbook.shells.base import Result, command_text

Answer = tuple[int, str] | Callable[[str, str | None], tuple[int, str]]


class FakeShell:
    def __init__(self, answers: dict[str, Answer] | None = None, name: str = "fake") -> None:
        self.name = name
        # The test's answers first (the first pattern that matches answers), then: root, every tool there.
        defaults: dict[str, Answer] = {r"^id -u$": (0, "0\n"), r"^command -v ": (0, "")}
        self.answers = {**(answers or {}), **{k: v for k, v in defaults.items() if k not in (answers or {})}}
        self.commands: list[str] = []
        self.inputs: list[str | None] = []

    def run(self, command: str | Sequence[str], *, timeout: float = 60.0, check: bool = False,
            input: str | None = None) -> Result:
        text = command_text(command)
        self.commands.append(text)
        self.inputs.append(input)
        code, out = 0, ""
        for pattern, answer in self.answers.items():
            if re.search(pattern, text):
                code, out = answer(text, input) if callable(answer) else answer
                break
        result = Result(text, code, out, "" if code == 0 else "failed", 0.0)
        return result.check() if check else result

    def close(self) -> None:
        pass

    def ran(self, pattern: str) -> list[str]:
        return [c for c in self.commands if re.search(pattern, c)]
