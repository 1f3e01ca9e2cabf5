"""Secret canaries: a secret's value must reach no channel of the evidence, nor the terminal.

The canary notebook prints the secret to stdout and stderr, displays it as HTML and JSON, puts
it in a step title, a check, a measure detail and the cell's result, and raises an exception
with it. The random core of each canary must then appear in no file of the archive.
"""
from __future__ import annotations

import html
import json
import os
import secrets
from pathlib import Path

import pytest
from conftest import Project, cli

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scheme, pass_token", [("env", True), ("file", True), ("env", False)])
def test_secret_canaries_never_reach_the_evidence(project: Project, tmp_path: Path, scheme: str,
                                                  pass_token: bool) -> None:
    """``pass_token``: the token's reference is given with -p, or left as the notebook's default."""
    core, token_core = secrets.token_hex(8), secrets.token_hex(8)
    canary = f'Cn{core}"q\\s'  # a quote and a backslash: escaped forms must be scrubbed too
    token = f"tok-{token_core}"
    if scheme == "env":
        ref = "env:DRILLBOOK_CANARY"
        os.environ["DRILLBOOK_CANARY"] = canary
    else:
        (project.root / "secret.txt").write_text(canary + "\n")
        ref = "file:secret.txt"
    os.environ["DRILLBOOK_TEST_TOKEN"] = token
    project.write_env("local", f"hosts:\n  here:\n    shell: local\nobjectives:\n  rto_seconds: 30\n"
                               f"secrets:\n  canary: {ref}\n")
    project.add_notebook("leaks_secret.ipynb")
    given = ["-p", "token_ref=env:DRILLBOOK_TEST_TOKEN"] if pass_token else []
    result = cli(project, "run", "leaks_secret", "--env", "local", *given)
    assert result.code == 1  # the notebook raises on purpose, after leaking everywhere it can
    assert "RuntimeError: connection failed with password '[REDACTED:canary]'" in result.stdout

    for channel in (result.stdout, result.stderr):
        assert core not in channel and token_core not in channel
    files = {p: p.read_bytes().decode("utf-8", "replace") for p in project.archive.rglob("*") if p.is_file()}
    assert len([p for p in files if p.name in ("record.json", "notebook.ipynb", "notebook.html")]) == 3
    for path, text in files.items():
        assert core not in text, f"canary leaked into {path}"
        assert token_core not in text, f"token leaked into {path}"
    for leftover in (project.root / ".drillbook").rglob("*"):  # markers and locks hold no secret either
        if leftover.is_file():
            assert core not in leftover.read_text(errors="replace")

    bundle = project.run_dirs()[0]
    notebook = (bundle / "notebook.ipynb").read_text()
    # Every channel was exercised and scrubbed (not merely absent because nothing ran).
    for channel in ('"name": "stdout"', '"name": "stderr"', "text/html", "application/json", '"ename": "RuntimeError"'):
        assert channel in notebook
    assert notebook.count("[REDACTED:canary]") >= 6
    assert "[REDACTED:canary]" in html.unescape((bundle / "notebook.html").read_text())
    record = json.loads((bundle / "record.json").read_text())
    assert record["steps"][0]["title"] == "Use [REDACTED:canary]"
    if pass_token:  # the reference is recorded, never the value
        assert record["parameters"]["token_ref"] == "env:DRILLBOOK_TEST_TOKEN"
        papermill_params = json.loads(notebook)["metadata"]["papermill"]["parameters"]
        assert papermill_params["token_ref"] == "env:DRILLBOOK_TEST_TOKEN"


def test_missing_secret_is_bad_input_and_nothing_runs(project: Project) -> None:
    os.environ.pop("DRILLBOOK_ABSENT", None)
    project.write_env("local", "hosts:\n  here:\n    shell: local\nsecrets:\n  api: env:DRILLBOOK_ABSENT\n")
    project.add_notebook("passes.ipynb")
    result = cli(project, "run", "passes", "--env", "local")
    assert result.code == 2
    assert result.stderr.splitlines()[0] == "error: secret env:DRILLBOOK_ABSENT is not set"
    assert project.run_dirs() == [] and not (project.archive / "ledger.jsonl").exists()


def test_unreadable_secret_file_is_bad_input(project: Project) -> None:
    project.write_env("local", "hosts:\n  here:\n    shell: local\nsecrets:\n  api: file:nowhere/secret\n")
    project.add_notebook("passes.ipynb")
    result = cli(project, "run", "passes", "--env", "local")
    assert result.code == 2
    assert "error: secret file:nowhere/secret cannot be read: No such file or directory" in result.stderr
    assert project.run_dirs() == []
