"""``drillbook incident open`` and the pre-save hook, without a browser.

The CLI runs as a subprocess in a project of its own: a working copy set for the environment with
``incident.json`` beside it; every bad input is one line, exit 2, and nothing written. The hook is
called as jupyter_server calls it, on a notebook under runbooks/ (scrubbed) and on a working copy
(left alone). The hook inside a real Jupyter server is tested in tests/browser/.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, Project, cli
from drillbook.config import notebooks
from drillbook.incidents import presave, servers, workcopy

FAILOVER = REPO / "runbooks" / "postgres-failover.ipynb"


@pytest.fixture
def incident_project(project: Project) -> Project:
    (project.root / "runbooks" / FAILOVER.name).write_bytes(FAILOVER.read_bytes())
    project.write_env("staging", "description: staging\nproduction: true\nhosts:\n  here:\n    shell: local\n")
    return project


def parameters(path: Path) -> dict[str, object]:
    return {p.name: p.default for p in notebooks.declared_parameters(notebooks.read_notebook(path)).values()}


def test_open_writes_a_working_copy_set_for_the_environment(incident_project: Project) -> None:
    root = incident_project.root
    before = (root / "runbooks" / FAILOVER.name).read_bytes()
    result = cli(root, "incident", "open", "postgres-failover", "--env", "staging", "--severity", "p1",
                 "--incident", "INC-42", env={"JUPYTER_RUNTIME_DIR": str(root / "no-servers")})
    assert result.code == 0, result.output
    folder = root / "incidents" / "INC-42"
    assert sorted(p.name for p in folder.iterdir()) == ["incident.json", "postgres-failover.ipynb"]
    assert json.loads((folder / "incident.json").read_text()) == {
        "runbook": "postgres-failover", "env": "staging", "severity": "P1", "incident": "INC-42",
        "source_sha256": hashlib.sha256(before).hexdigest()}
    params = parameters(folder / FAILOVER.name)
    assert params["env"] == "staging" and params["dry_run"] is True and params["change"] is None
    assert (root / "runbooks" / FAILOVER.name).read_bytes() == before  # the source is untouched
    assert "incidents/INC-42/postgres-failover.ipynb" in result.stdout
    assert "no JupyterLab is running" in result.stdout and "jupyter lab" in result.stdout


def test_a_generated_id_names_the_folder(incident_project: Project) -> None:
    result = cli(incident_project.root, "incident", "open", "postgres-failover", "--env", "local")
    assert result.code == 0, result.output
    (folder,) = (incident_project.root / "incidents").iterdir()
    assert folder.name.startswith("INC-") and json.loads((folder / "incident.json").read_text())["severity"] is None


@pytest.mark.parametrize("args, message", [
    (["no-such-runbook", "--env", "local"], "unknown drill or runbook"),
    (["postgres-failover", "--env", "nope"], "unknown environment 'nope'"),
    (["postgres-failover", "--env", "../local"], "not an environment name"),
    (["postgres-failover", "--env", "local", "--severity", "P9"], "bad severity 'P9'"),
    (["postgres-failover", "--env", "local", "--incident", "../../etc"], "not an incident id"),
    (["postgres-failover", "--env", "local", "--incident", "a/b"], "not an incident id"),
    (["postgres-failover", "--env", "local", "--incident", "-rf"], "not an incident id"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(incident_project: Project, args: list[str],
                                                          message: str) -> None:
    result = cli(incident_project.root, "incident", "open", *args)
    assert result.code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert result.stderr.count("error:") == 1
    assert not (incident_project.root / "incidents").exists()


def test_an_open_incident_is_never_overwritten(incident_project: Project) -> None:
    args = ("incident", "open", "postgres-failover", "--env", "local", "--incident", "INC-7")
    assert cli(incident_project.root, *args).code == 0
    copy_path = incident_project.root / "incidents" / "INC-7" / FAILOVER.name
    copy_path.write_text(copy_path.read_text().replace("dry_run = True", "dry_run = False"))
    edited = copy_path.read_bytes()
    again = cli(incident_project.root, *args)
    assert again.code == 2 and "already has a working folder" in again.stderr
    assert copy_path.read_bytes() == edited


def test_a_planted_link_is_never_followed(incident_project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (incident_project.root / "incidents").symlink_to(elsewhere)
    result = cli(incident_project.root, "incident", "open", "postgres-failover", "--env", "local")
    assert result.code == 2 and "is not a folder of this project" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_drill_is_not_an_incident_procedure(incident_project: Project) -> None:
    drill = REPO / "notebooks" / "drills" / "smoke.ipynb"
    (incident_project.root / "notebooks" / "drills" / drill.name).write_bytes(drill.read_bytes())
    result = cli(incident_project.root, "incident", "open", "smoke", "--env", "local")
    assert result.code == 2 and "is not a runbook" in result.stderr


def test_set_parameter_keeps_the_comment_and_the_other_lines() -> None:
    source = 'env = "local"  # où: the environment\ndry_run = True\n'
    expected = 'env = "prod-eu"  # où: the environment\ndry_run = True\n'
    assert workcopy.set_parameter(source, "env", "prod-eu") == expected


def test_lab_url_names_the_file_on_a_server_that_serves_it_and_never_a_token(tmp_path: Path) -> None:
    notebook = tmp_path / "proj" / "incidents" / "INC 1" / "x.ipynb"
    lab = servers.LabServer("http://127.0.0.1:8123/", tmp_path / "proj", 1)
    other = servers.LabServer("http://127.0.0.1:9999/", tmp_path / "elsewhere", 2)
    assert servers.lab_url(notebook, [other, lab]) == "http://127.0.0.1:8123/lab/tree/incidents/INC%201/x.ipynb"
    assert servers.lab_url(notebook, [other]) is None


# --------------------------------------------------------------------------- the pre-save hook
class Manager:
    def __init__(self, root: Path) -> None:
        self.root_dir = str(root)


def run_model(path: Path) -> dict:
    """What JupyterLab sends after an operator ran the runbook live: outputs, counts, values, widgets."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "✓ Promote pg2\n"}]
            cell["execution_count"] = 3
        if "parameters" in cell["metadata"].get("tags", []):
            cell["source"] = "".join(cell["source"]).replace("dry_run = True", "dry_run = False").replace(
                "change = None", 'change = "CHG-1234"')
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    return {"type": "notebook", "format": "json", "content": nb}


def test_presave_strips_a_run_from_a_source_notebook(incident_project: Project) -> None:
    source = incident_project.root / "runbooks" / FAILOVER.name
    model = run_model(source)
    presave.scrub_source_notebook(model=model, path=f"runbooks/{FAILOVER.name}",
                                  contents_manager=Manager(incident_project.root))
    saved = nbformat.writes(nbformat.from_dict(model["content"])) + "\n"
    assert saved == source.read_text()  # what it would write is what is there


def test_presave_keeps_runner_parameters_even_with_outputs_cleared(incident_project: Project) -> None:
    source = incident_project.root / "runbooks" / FAILOVER.name
    model = run_model(source)
    nb = model["content"]
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        if "parameters" in cell["metadata"].get("tags", []):
            cell["source"] = cell["source"].replace("new_primary = None", 'new_primary = "pg2"')
    presave.scrub_source_notebook(model=model, path=f"runbooks/{FAILOVER.name}",
                                  contents_manager=Manager(incident_project.root))
    params = next(c["source"] for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    assert "dry_run = True" in params and "change = None" in params  # a run's values never stay
    assert 'new_primary = "pg2"' in params  # an author's edit of another default does


def test_presave_leaves_a_working_copy_alone(incident_project: Project) -> None:
    assert cli(incident_project.root, "incident", "open", "postgres-failover", "--env", "local",
               "--incident", "INC-9").code == 0
    relative = f"incidents/INC-9/{FAILOVER.name}"
    model = run_model(incident_project.root / relative)
    untouched = copy.deepcopy(model)
    presave.scrub_source_notebook(model=model, path=relative, contents_manager=Manager(incident_project.root))
    assert model == untouched


def test_opening_an_incident_freezes_the_environments_drills_but_not_its_runbooks(incident_project: Project) -> None:
    root = incident_project.root
    incident_project.add_notebook("passes.ipynb")  # a drill
    runbook = incident_project.add_notebook("passes.ipynb", folder="runbooks", name="recover.ipynb")
    nb = nbformat.read(str(runbook), as_version=4)
    nb.metadata["drillbook"]["kind"] = "runbook"
    nbformat.write(nb, str(runbook))
    opened = cli(root, "incident", "open", "postgres-failover", "--env", "local", "--incident", "INC-9")
    assert opened.code == 0 and "FROZEN: environment 'local' is frozen" in opened.stdout and "incident INC-9 open" in opened.stdout, \
        opened.output
    drill = cli(root, "run", "passes", "--env", "local")
    assert drill.code == 3 and "incident INC-9 open (postgres-failover)" in drill.stderr, drill.output
    assert incident_project.run_dirs() == []
    recovery = cli(root, "run", "recover", "--env", "local")  # the way back is never frozen
    assert recovery.code == 0, recovery.output
    again = cli(root, "incident", "open", "postgres-failover", "--env", "local", "--incident", "INC-10")
    assert "drills stay frozen" in again.stdout and "INC-9" in again.stdout  # the first incident's freeze is kept
    assert cli(root, "thaw", "--env", "local").code == 0
    quiet = cli(root, "incident", "open", "postgres-failover", "--env", "local", "--incident", "INC-11",
                "--no-freeze-drills")
    assert quiet.code == 0 and "FROZEN" not in quiet.output
    assert cli(root, "run", "passes", "--env", "local").code == 0
