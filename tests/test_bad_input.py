"""Bad input: a clear one-line error (and a hint), exit 2, and nothing written to the archive."""
from __future__ import annotations

import pytest
from conftest import Project, cli

pytestmark = pytest.mark.integration


def assert_refused(project: Project, result, first_line: str) -> None:
    assert result.code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0] == first_line, result.stderr
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: "))
    assert "Traceback" not in result.output
    assert project.run_dirs() == []
    assert not (project.archive / "ledger.jsonl").exists()
    assert not list((project.state / "inflight").glob("*"))  # no marker left (glob of a missing folder is empty)


@pytest.fixture
def with_passes(project: Project) -> Project:
    project.add_notebook("passes.ipynb")
    return project


def test_unknown_drill(with_passes: Project) -> None:
    result = cli(with_passes, "run", "nosuch", "--env", "local")
    assert_refused(with_passes, result, "error: unknown drill or runbook 'nosuch'")
    assert "hint: known: passes (see drillbook list)" in result.stderr


def test_unknown_environment(with_passes: Project) -> None:
    result = cli(with_passes, "run", "passes", "--env", "staging")
    assert_refused(with_passes, result, "error: unknown environment 'staging'")
    assert "known environments: local" in result.stderr


def test_malformed_yaml(with_passes: Project) -> None:
    with_passes.write_env("local", "hosts:\n  here: [unclosed\n")
    result = cli(with_passes, "run", "passes", "--env", "local")
    assert result.code == 2
    path = with_passes.root / "parameters/environments/local.yaml"
    assert_refused(with_passes, result, result.stderr.splitlines()[0])
    assert result.stderr.startswith(f"error: {path}:3:1: malformed YAML:")


def test_unknown_key_in_environment(with_passes: Project) -> None:
    with_passes.write_env("local", "hosts:\n  here:\n    shell: local\n    colour: blue\n")
    result = cli(with_passes, "run", "passes", "--env", "local")
    path = with_passes.root / "parameters/environments/local.yaml"
    assert_refused(with_passes, result, f"error: {path}: hosts.here.colour: unknown key")


def test_wrong_type_in_environment(with_passes: Project) -> None:
    with_passes.write_env("local", "production: maybe\nhosts: {}\n")
    result = cli(with_passes, "run", "passes", "--env", "local")
    path = with_passes.root / "parameters/environments/local.yaml"
    assert_refused(with_passes, result,
                   f"error: {path}: production: input should be a valid boolean, unable to interpret input, got 'maybe'")


def test_bad_secret_reference_in_environment(with_passes: Project) -> None:
    with_passes.write_env("local", "secrets:\n  api: vault:kv/api\n")
    result = cli(with_passes, "run", "passes", "--env", "local")
    path = with_passes.root / "parameters/environments/local.yaml"
    assert_refused(with_passes, result, f"error: {path}: secrets.api: not a secret reference: 'vault:kv/api'; "
                                        "write env:VARIABLE_NAME or file:/path/to/secret")


def test_wrong_parameter_type(with_passes: Project) -> None:
    path = with_passes.add_notebook("plain.ipynb", folder="elsewhere")
    result = cli(with_passes, "run", str(path), "--env", "local", "-p", "count=three")
    assert_refused(with_passes, result, "error: parameter 'count' from -p expects int (default 3), got 'three'")
    assert "hint: pass a value of type int, e.g. -p count=3" in result.stderr


def test_unknown_parameter(with_passes: Project) -> None:
    result = cli(with_passes, "run", "passes", "--env", "local", "-p", "colour=blue")
    assert_refused(with_passes, result, "error: passes.ipynb declares no parameter 'colour' (given by -p)")


def test_parameter_without_equals(with_passes: Project) -> None:
    result = cli(with_passes, "run", "passes", "--env", "local", "-p", "colour")
    assert_refused(with_passes, result, "error: bad parameter 'colour'")


def test_runner_parameter_cannot_be_overridden(with_passes: Project) -> None:
    result = cli(with_passes, "run", "passes", "--env", "local", "-p", "dry_run=false")
    assert_refused(with_passes, result, "error: parameter 'dry_run' is set by the runner")


def test_environment_parameter_not_declared(with_passes: Project) -> None:
    with_passes.write_env("local", "parameters:\n  passes:\n    colour: blue\n")
    result = cli(with_passes, "run", "passes", "--env", "local")
    assert_refused(with_passes, result, "error: passes.ipynb declares no parameter 'colour' (given by environment local)")


def test_notebook_without_parameters_cell(with_passes: Project) -> None:
    with_passes.add_notebook("no_parameters.ipynb")
    result = cli(with_passes, "run", "no_parameters", "--env", "local")
    assert_refused(with_passes, result, "error: no_parameters.ipynb: no parameters cell")
    assert "tag the cell that sets the defaults with 'parameters'" in result.stderr


def test_not_a_notebook(with_passes: Project) -> None:
    bogus = with_passes.root / "bogus.ipynb"
    bogus.write_text("{ not json")
    result = cli(with_passes, "run", str(bogus), "--env", "local")
    assert result.code == 2
    assert result.stderr.startswith(f"error: {bogus}: not a notebook (invalid JSON:")
    assert with_passes.run_dirs() == []


def test_unreachable_ssh_host(with_passes: Project) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with_passes.write_env("local", f"hosts:\n  far:\n    shell: ssh\n    address: 127.0.0.1\n    port: {port}\n")
    result = cli(with_passes, "run", "passes", "--env", "local")
    assert_refused(with_passes, result,
                   f"error: host far (127.0.0.1:{port}) of environment 'local' is unreachable: Connection refused")


def test_missing_arguments(with_passes: Project) -> None:
    result = cli(with_passes, "run", "passes")
    assert_refused(with_passes, result, "error: name a notebook and an environment")


def test_invalid_metadata(with_passes: Project) -> None:
    import json

    path = with_passes.root / "notebooks/drills/passes.ipynb"
    nb = json.loads(path.read_text())
    nb["metadata"]["drillbook"]["kind"] = "ritual"
    path.write_text(json.dumps(nb))
    result = cli(with_passes, "run", "passes", "--env", "local")
    assert_refused(with_passes, result, f"error: {path}: metadata.drillbook.kind: Input should be 'runbook' or 'drill'")
