"""Hostile and malformed input: environment names that are paths, YAML that expands without
bound, bytes that are not text. Each is refused with one line (and a hint), exit 2, nothing archived."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import CliResult, Project, cli

# Bounded so that a regression fails the test instead of running (and swelling) for minutes.
QUICK = 60.0


def refused(project: Project, result: CliResult) -> str:
    """The error line of a refused command, after checking that it was refused cleanly."""
    assert result.code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: ")), result.stderr
    assert project.run_dirs() == []
    assert not (project.archive / "ledger.jsonl").exists()
    assert not list((project.state / "inflight").glob("*"))
    return lines[0]


def hint(result: CliResult) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[1] if len(lines) > 1 else ""


def add_list_notebook(project: Project) -> str:
    """A plain notebook (outside the catalog, run by path) with a list parameter: YAML values for
    it reach the notebook as given."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("items = []", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(len(items))")]
    target = project.root / "elsewhere" / "lists.ipynb"
    target.parent.mkdir(exist_ok=True)
    nbformat.write(nb, str(target))
    return str(target)


def alias_bomb(levels: int = 9) -> str:
    """Nine lists, each of nine aliases of the previous one: about 500 bytes, 9**9 strings expanded."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lists = ["&a [" + ", ".join(['"lol"'] * 9) + "]"]
    lists += [f"&{name} [" + ", ".join([f"*{prev}"] * 9) + "]" for prev, name in zip(names, names[1:])]
    return "[" + ", ".join(lists) + "]"


# --------------------------------------------------------------------------- 7: names, not paths
def test_absolute_env_path_is_not_an_environment(project: Project, tmp_path: Path) -> None:
    project.add_notebook("passes.ipynb")
    project.write_env("prod", "production: true\nhosts:\n  here:\n    shell: local\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "prod.yaml").write_text("production: false\nhosts:\n  here:\n    shell: local\n")
    result = cli(project, "run", "passes", "--env", str(outside / "prod"), timeout=QUICK)
    assert refused(project, result) == (
        f"error: not an environment name: '{outside / 'prod'}' "
        "(a name is lower-case letters, digits, '-' and '_', not a path)")
    assert hint(result) == "hint: known environments: local, prod (see drillbook envs)"


def test_relative_env_path_is_not_an_environment(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    (project.root / "parameters" / "x.yaml").write_text("hosts:\n  here:\n    shell: local\n")
    result = cli(project, "run", "passes", "--env", "../x", timeout=QUICK)
    assert refused(project, result).startswith("error: not an environment name: '../x'")
    assert "known environments: local" in hint(result)


def test_overlong_env_name_is_refused_before_it_reaches_the_file_system(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    project.write_env("Staging", "description: misnamed\n")
    result = cli(project, "run", "passes", "--env", "a" * 300, timeout=QUICK)  # longer than a file name may be
    assert refused(project, result).startswith("error: not an environment name: 'aaaa")
    assert hint(result) == "hint: known environments: local (see drillbook envs)"  # not the misnamed file


def test_scheduled_env_must_be_a_name(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    (project.root / "parameters" / "x.yaml").write_text("hosts:\n  here:\n    shell: local\n")
    schedule = project.root / "parameters" / "schedule.yaml"
    schedule.write_text('runs:\n  - {drill: passes, env: ../x, cron: "* * * * *"}\n')
    result = cli(project, "run", "--due", timeout=QUICK)
    assert refused(project, result).startswith(f"error: {schedule}: runs[0]: not an environment name: '../x'")


def test_lock_refuses_a_path_for_a_name(tmp_path: Path) -> None:
    from drillbook.errors import NotFound
    from drillbook.runner import locks

    state = tmp_path / "state"
    with pytest.raises(NotFound, match="not an environment name"):
        with locks.hold(state, "../escaped", "run-1"):
            pass
    assert not list(tmp_path.rglob("*.lock"))


def test_kernel_start_refuses_a_path_for_a_name(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    import drillbook
    from drillbook.errors import NotFound

    (project.root / "parameters" / "x.yaml").write_text("production: false\n")
    monkeypatch.setenv("DRILLBOOK_PROJECT", str(project.root))
    with pytest.raises(NotFound, match="not an environment name"):
        drillbook.start(env="../x")


# --------------------------------------------------------------------------- 8: bounded YAML
def test_alias_bomb_in_environment_is_refused_quickly(project: Project) -> None:
    notebook = add_list_notebook(project)
    path = project.write_env("local", f"hosts:\n  here:\n    shell: local\nparameters:\n  lists:\n"
                                      f"    items: {alias_bomb()}\n")
    assert path.stat().st_size < 600
    result = cli(project, "run", notebook, "--env", "local", timeout=QUICK)
    line = refused(project, result)
    assert line.startswith(f"error: {path}:6:")
    assert line.endswith("YAML alias *a is not allowed in the environment file")
    assert "write the value out in full" in hint(result)


def test_alias_bomb_in_a_parameter_value_is_not_expanded(project: Project) -> None:
    notebook = add_list_notebook(project)
    result = cli(project, "run", notebook, "--env", "local", "-p", f"items={alias_bomb()}", timeout=QUICK)
    assert refused(project, result).startswith("error: parameter 'items' from -p expects list (default []), got '[&a")


def test_aliases_in_the_schedule_are_refused(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    schedule = project.root / "parameters" / "schedule.yaml"
    second = '  - {drill: passes, env: local, cron: "0 * * * *", approve: *gates}\n'
    schedule.write_text('runs:\n  - {drill: passes, env: local, cron: "* * * * *", approve: &gates [a, b]}\n' + second)
    result = cli(project, "run", "--due", timeout=QUICK)
    column = second.index("*gates") + 1
    assert refused(project, result) == f"error: {schedule}:3:{column}: YAML alias *gates is not allowed in the schedule"


def test_oversized_environment_file_is_refused(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    path = project.write_env("local", "description: " + "x" * 300_000 + "\nhosts:\n  here:\n    shell: local\n")
    result = cli(project, "run", "passes", "--env", "local", timeout=QUICK)
    assert refused(project, result) == (
        f"error: {path}: the environment file is larger than 256 KiB, the most drillbook reads")


def test_deeply_nested_environment_file_is_refused(project: Project) -> None:
    notebook = add_list_notebook(project)
    path = project.write_env("local", "parameters:\n  lists:\n    items: " + "[" * 5000 + "]" * 5000 + "\n")
    result = cli(project, "run", notebook, "--env", "local", timeout=QUICK)
    line = refused(project, result)
    assert line.startswith(f"error: {path}:3:")
    assert line.endswith("nested more than 64 levels deep in the environment file")


@pytest.mark.parametrize(("entry", "message"), [
    ("parameters: [a, b]", "parameters: expected a mapping of name: value"),
    ("approve: fault", "approve: expected a list of gate names"),
])
def test_mistyped_schedule_entry_is_refused(project: Project, entry: str, message: str) -> None:
    project.add_notebook("passes.ipynb")
    schedule = project.root / "parameters" / "schedule.yaml"
    schedule.write_text(f'runs:\n  - {{drill: passes, env: local, cron: "* * * * *", {entry}}}\n')
    result = cli(project, "run", "--due", timeout=QUICK)
    assert refused(project, result) == f"error: {schedule}: runs[0]: {message}"


# --------------------------------------------------------------------------- 9: bytes that are not text
def test_latin1_environment_file_is_refused(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    path = project.root / "parameters" / "environments" / "local.yaml"
    path.write_bytes("hosts:\n  here:\n    shell: local\ndescription: café\n".encode("latin-1"))
    result = cli(project, "run", "passes", "--env", "local", timeout=QUICK)
    assert refused(project, result) == f"error: {path}:4: the environment file is not UTF-8 text (byte 0xe9)"
    assert hint(result) == "hint: save the file as UTF-8 (the encoding YAML requires)"


def test_latin1_environment_file_in_envs_listing(project: Project) -> None:
    path = project.root / "parameters" / "environments" / "local.yaml"
    path.write_bytes("description: café\n".encode("latin-1"))
    result = cli(project, "envs", timeout=QUICK)
    assert refused(project, result) == f"error: {path}:1: the environment file is not UTF-8 text (byte 0xe9)"


def test_binary_secret_file_is_refused(project: Project, tmp_path: Path) -> None:
    project.add_notebook("passes.ipynb")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)))
    project.write_env("local", f"hosts:\n  here:\n    shell: local\nsecrets:\n  blob: file:{blob}\n")
    result = cli(project, "run", "passes", "--env", "local", timeout=QUICK)
    assert refused(project, result) == (
        f"error: secret file:{blob} is not UTF-8 text (a binary file or a mis-encoded variable?)")
    assert hint(result).startswith("hint: store the secret as UTF-8 text")


def test_undecodable_secret_variable_is_refused(project: Project) -> None:
    project.add_notebook("passes.ipynb")
    project.write_env("local", "hosts:\n  here:\n    shell: local\nsecrets:\n  api: env:DRILLBOOK_TEST_BYTES\n")
    # A surrogate escape is how Python hands over an environment byte that is not UTF-8 (here 0xff).
    result = cli(project, "run", "passes", "--env", "local", env={"DRILLBOOK_TEST_BYTES": "pass\udcffword"},
                 timeout=QUICK)
    assert refused(project, result) == (
        "error: secret env:DRILLBOOK_TEST_BYTES is not UTF-8 text (a binary file or a mis-encoded variable?)")


def test_oversized_secret_file_is_refused(project: Project, tmp_path: Path) -> None:
    project.add_notebook("passes.ipynb")
    big = tmp_path / "big.secret"
    big.write_text("s" * (2 * 1024 * 1024))
    project.write_env("local", f"hosts:\n  here:\n    shell: local\nsecrets:\n  big: file:{big}\n")
    result = cli(project, "run", "passes", "--env", "local", timeout=QUICK)
    assert refused(project, result) == f"error: secret file:{big} is larger than 1024 KiB"


def test_binary_known_hosts_file_is_refused(tmp_path: Path) -> None:
    import paramiko
    from drillbook.errors import UnreachableHost
    from drillbook.shells.ssh import SSHShell

    known = tmp_path / "known_hosts"
    known.write_bytes(bytes(range(128, 256)))
    shell = SSHShell("far", "127.0.0.1", 22, "nobody", paramiko.RSAKey.generate(1024), known)
    with pytest.raises(UnreachableHost, match=f"known_hosts file {known} of host 'far' is not text"):
        shell.connect()


def test_binary_login_role_file_is_a_postgres_error(tmp_path: Path) -> None:
    from drillbook.config.environments import PostgresService
    from drillbook.targets.postgres.connect import Connections, PostgresContext
    from drillbook.targets.postgres.results import PostgresError

    (tmp_path / "app_user").write_bytes(b"\xff\xfeapp")
    service = PostgresService(kind="postgres", user="file:app_user",
                              nodes=[{"name": "pg1", "host": "here", "port": 5432}])
    connections = Connections(PostgresContext(service, open_shell=lambda host: None, secret=lambda ref: "",
                                              project=tmp_path))
    with pytest.raises(PostgresError, match="login role in .* is not UTF-8 text"):
        connections.credentials("app")
