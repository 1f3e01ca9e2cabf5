"""Shared fixtures: every test gets its own project, archive, state and signing key.

Nothing a test does touches the checkout's reports/ or the user's real signing key.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DRILLBOOK = Path(sys.executable).parent / "drillbook"


@pytest.fixture(autouse=True)
def _restore_environ(tmp_path_factory: pytest.TempPathFactory):
    """Restore os.environ after each test and point drillbook's key home and trust file at a temporary folder."""
    saved = dict(os.environ)
    home = tmp_path_factory.mktemp("drillbook-home")
    os.environ["DRILLBOOK_HOME"] = str(home)
    # Each test signs with a key of its own (in its home): it trusts that key in a trust file of its
    # own too, or the session lab's project would pin the first test's key for all the others.
    os.environ["DRILLBOOK_TRUST"] = str(home / "trust.yaml")
    for name in ("DRILLBOOK_PROJECT", "DRILLBOOK_ARCHIVE", "DRILLBOOK_STATE", "DRILLBOOK_RUN_DIR"):
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def project_trust_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests about a project's own trust file (parameters/trust.yaml), or whose module-wide archive
    was signed before any test's own trust file existed: no per-test trust file."""
    monkeypatch.delenv("DRILLBOOK_TRUST", raising=False)


@pytest.fixture
def run_dir(project: "Project", tmp_path: Path) -> Iterator[Path]:
    """A private run folder as the runner gives a kernel (``DRILLBOOK_RUN_DIR``), in ``project``; the
    drill the test started is forgotten afterwards (the module keeps the current one)."""
    os.environ["DRILLBOOK_PROJECT"] = str(project.root)
    path = tmp_path / "run"
    path.mkdir()
    os.environ["DRILLBOOK_RUN_DIR"] = str(path)
    yield path
    import drillbook.drill

    drillbook.drill._current = None


@dataclass
class Project:
    root: Path

    @property
    def archive(self) -> Path:
        return self.root / "reports" / "evidence"

    @property
    def state(self) -> Path:
        return self.root / ".drillbook"

    def add_notebook(self, fixture: str, folder: str = "notebooks/drills", name: str | None = None) -> Path:
        target = self.root / folder / (name or fixture)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / "notebooks" / fixture, target)
        return target

    def write_env(self, name: str, text: str) -> Path:
        path = self.root / "parameters" / "environments" / f"{name}.yaml"
        path.write_text(text)
        return path

    def run_dirs(self) -> list[Path]:
        runs = self.archive / "runs"
        return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) if runs.exists() else []


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A minimal drillbook project: one local environment, no notebooks yet."""
    root = tmp_path / "project"
    (root / "parameters" / "environments").mkdir(parents=True)
    (root / "runbooks").mkdir()
    (root / "notebooks" / "drills").mkdir(parents=True)
    shutil.copytree(REPO / "notebooks" / "templates", root / "notebooks" / "templates")
    proj = Project(root)
    proj.write_env("local", "description: test lab\nhosts:\n  here:\n    shell: local\nobjectives:\n  rto_seconds: 30\n")
    return proj


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli(project: Project | Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    """Run the real `drillbook` console script in a subprocess, in the project folder."""
    root = project.root if isinstance(project, Project) else project
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    done = subprocess.run([str(DRILLBOOK), *args], cwd=root, capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    return CliResult(done.returncode, done.stdout, done.stderr)
