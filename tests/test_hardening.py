"""Hardening: secrets a kernel resolves on its own, every encoding of a secret, the change guard on
cleanups, and hostile notebook text on the published site.

The secret and site tests run real notebooks through the real runner (`drillbook run`) in a project
made by bench/site_build.py (the same one tests/test_site.py publishes), then publish it with MkDocs.
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, quote_plus

import markupsafe
import pytest

import drillbook
from conftest import FIXTURES, Project, cli
from drillbook.errors import ChangeRequired
from drillbook.secrets import Redactor
from test_site import site_build

MARKER = "[REDACTED:db]"


# --------------------------------------------------------------------------- the change guard on cleanups
@pytest.fixture
def run_dir(project: Project, tmp_path: Path) -> Iterator[Path]:
    os.environ["DRILLBOOK_PROJECT"] = str(project.root)
    path = tmp_path / "run"
    path.mkdir()
    os.environ["DRILLBOOK_RUN_DIR"] = str(path)
    yield path
    import drillbook.drill

    drillbook.drill._current = None


@pytest.mark.filterwarnings("ignore:No kernel detected:UserWarning")
def test_production_cleanups_need_the_change_reference_too(project: Project, run_dir: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    project.write_env("prod", "production: true\n")
    ran: list[str] = []
    drill = drillbook.start(env="prod", dry_run=False)
    drill.cleanup(lambda: ran.append("restore"), "Restore the old primary")  # mutating by default
    drill.cleanup(lambda: ran.append("report"), "Collect the logs", mutating=False)
    with pytest.raises(ChangeRequired) as refused:
        drill.step("Promote", lambda: ran.append("promote"), mutating=True)
    drill.fail(refused.value)  # what the kernel's cell hook does after the cell raised
    assert ran == ["report"]  # the read-only cleanup ran; the mutating one did not
    cleanups = json.loads((run_dir / "journal.json").read_text())["cleanups"]
    assert [(c["title"], c["status"]) for c in cleanups] == [("Collect the logs", "passed"),
                                                              ("Restore the old primary", "refused")]
    assert cleanups[1]["detail"] == ("cleanup 'Restore the old primary' changes production environment 'prod' "
                                     "and no change reference was given")
    assert "✗ cleanup Restore the old primary not run: cleanup 'Restore the old primary' changes production" \
        in capsys.readouterr().out

    ran.clear()
    drill = drillbook.start(env="prod", dry_run=False, change="CHG-7")
    drill.cleanup(lambda: ran.append("restore"), "Restore the old primary")
    drill.finish()
    assert ran == ["restore"]
