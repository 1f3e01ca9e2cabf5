"""``parameters/project.yaml``: the project's ``archive:`` setting (a folder or ``s3://bucket/prefix``),
overridden by ``DRILLBOOK_ARCHIVE``; a bad value is one line and exit 2."""
from __future__ import annotations


import pytest
from conftest import Project, cli
from drillbook import paths
from drillbook.errors import ConfigError
from drillbook.evidence.store import S3Archive, S3Store, parse_s3, project_archive
from s3support import s3_archive, s3_server  # noqa: F401  (fixtures)


def _setting(project: Project, text: str) -> None:
    (project.root / "parameters" / "project.yaml").write_text(text)


@pytest.mark.integration
def test_the_project_setting_puts_the_archive_on_s3_and_the_variable_overrides_it(project: Project,
                                                                                  s3_archive: str) -> None:
    project.add_notebook("passes.ipynb")
    _setting(project, f"# where every worker's evidence goes\narchive: {s3_archive}\n")
    ran = cli(project, "run", "passes", "--env", "local")
    assert ran.code == 0 and f"evidence: {s3_archive}/runs/" in ran.stdout, ran.output
    assert not project.archive.exists()  # nothing in the folder the setting replaced
    archive = parse_s3(s3_archive)
    assert any(k.endswith("/record.json") for k in S3Store(archive).list("runs/"))
    status = cli(project, "status")
    assert status.code == 0 and "passes" in status.stdout, status.output
    folder = project.root / "elsewhere"
    overridden = cli(project, "status", env={"DRILLBOOK_ARCHIVE": str(folder)})
    assert overridden.code == 0 and "no runs recorded yet" in overridden.stdout and "FROZEN" not in overridden.stdout


def test_a_relative_folder_is_the_projects_and_the_variable_wins(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRILLBOOK_PROJECT", str(project.root))
    assert paths.archive_root() == (project.root / "reports" / "evidence").resolve()  # no file: the default
    _setting(project, "archive: ../shared/evidence\n")
    assert paths.archive_root() == (project.root.parent / "shared" / "evidence").resolve()
    _setting(project, "archive: s3://team-bucket/drills\n")
    assert project_archive() == S3Archive("team-bucket", "drills")
    with pytest.raises(Exception, match="is on object storage"):
        paths.archive_root()
    monkeypatch.setenv("DRILLBOOK_ARCHIVE", str(project.root / "mine"))
    assert project_archive() == (project.root / "mine").resolve()


@pytest.mark.parametrize(("text", "says"), [
    ("- archive\n", "expected a mapping"),
    ("archiv: s3://team-bucket/x\n", "unknown setting 'archiv'"),
    ("archive: 5\n", "archive: expected a folder or s3://bucket/prefix, got 5"),
    ("archive: ''\n", "archive: expected a folder"),
    ("archive: \"reports\\tevidence\"\n", "archive: expected a folder"),
    ("archive: [a, b]\n", "archive: expected a folder"),
    ("archive: &a x\nother: *a\n", "alias"),
])
def test_bad_settings_are_refused(project: Project, monkeypatch: pytest.MonkeyPatch, text: str, says: str) -> None:
    monkeypatch.setenv("DRILLBOOK_PROJECT", str(project.root))
    _setting(project, text)
    with pytest.raises(ConfigError, match=says.replace("[", r"\[")) as raised:
        paths.archive_location()
    assert "project.yaml" in raised.value.message


def test_a_bad_setting_is_one_line_and_exit_2(project: Project) -> None:
    _setting(project, "archive: s3://Not_A_Bucket/x\n")
    result = cli(project, "status")
    assert result.code == 2 and "not a valid S3 bucket name" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 2  # the error and its hint
    _setting(project, "archive: {nested: true}\n")
    result = cli(project, "freeze", "--env", "local", "--reason", "x")
    assert result.code == 2 and "project.yaml: archive: expected a folder" in result.stderr, result.output
    assert not project.archive.exists()  # nothing half-written
