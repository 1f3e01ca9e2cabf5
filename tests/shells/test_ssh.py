"""SSHShell against a real OpenSSH server (the lab's sshd on a loopback port). Under CI these never skip."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from drillbook.config.secrets import Redactor, SecretRef
from drillbook.errors import UnreachableHost
from drillbook.lab.oslevel import lab_user
from drillbook.lab.sshd import known_hosts_line
from drillbook.pki import make_ssh_key
from drillbook.shells import ssh
from drillbook.shells.base import CommandFailed
from drillbook.shells.open import open_shell
from labsupport import LabProject, free_ports, lab_project, require_sshd  # noqa: F401

pytestmark = pytest.mark.integration
CANARY = "canary-9f3b1c7e-secret"


@pytest.fixture
def host(lab_project: LabProject):
    require_sshd()
    return lab_project.env.hosts["lab-ssh"]


def shell_for(lab_project: LabProject, spec, redactor: Redactor | None = None, **changes) -> ssh.SSHShell:
    spec = spec.model_copy(update=changes)
    secret = lambda ref: SecretRef.parse(ref).resolve(lab_project.root)  # noqa: E731
    return ssh.SSHShell.from_host("lab-ssh", spec, secret, redactor or Redactor(), lab_project.root)


def test_key_auth_runs_commands_as_the_lab_user(lab_project: LabProject, host) -> None:
    with shell_for(lab_project, host) as sh:
        result = sh.run("id -un", check=True)
        assert result.stdout.strip() == lab_user() and result.exit_code == 0
        assert sh.run(["printf", "%s|", "two words", "it's"]).stdout == "two words|it's|"  # lists are quoted
        assert sh.run("cat", input="line 1\nline 2\n").stdout == "line 1\nline 2\n"
        assert sh.run("cat").stdout == ""  # stdin is closed: commands that read it do not hang


def test_exit_codes_and_stderr_come_back(lab_project: LabProject, host) -> None:
    with shell_for(lab_project, host) as sh:
        result = sh.run("echo out; echo err >&2; exit 7")
        assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
        with pytest.raises(CommandFailed, match=r"exit 7.*err"):
            sh.run("echo err >&2; exit 7", check=True)
        big = sh.run("head -c 300000 /dev/zero | tr '\\0' x").stdout
        assert len(big) == 300000  # more than one channel window


def test_a_command_that_outlives_its_timeout_returns_124(lab_project: LabProject, host) -> None:
    with shell_for(lab_project, host) as sh:
        t0 = time.monotonic()
        result = sh.run("echo started; sleep 5", timeout=0.5)
        assert result.exit_code == 124 and "timed out after 0.5 s" in result.stderr
        assert "started" in result.stdout
        assert time.monotonic() - t0 < 2
        assert sh.run("echo still usable").stdout == "still usable\n"


def test_output_and_command_are_redacted(lab_project: LabProject, host) -> None:
    redactor = Redactor()
    redactor.add("canary", CANARY)
    with shell_for(lab_project, host, redactor) as sh:
        result = sh.run(f"echo {CANARY}; echo {CANARY} >&2")
        assert CANARY not in result.stdout + result.stderr + result.command
        assert result.stdout == "[REDACTED:canary]\n" and "[REDACTED:canary]" in result.command


def test_unknown_host_key_is_refused_and_not_added(lab_project: LabProject, host, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(UnreachableHost, match="is not in") as info:
        shell_for(lab_project, host, known_hosts=str(empty))
    assert info.value.hint and "\n" not in info.value.message
    assert empty.read_text() == ""  # never trust on first use


def test_changed_host_key_is_refused(lab_project: LabProject, host, tmp_path: Path) -> None:
    _, other_public = make_ssh_key("impostor")
    forged = tmp_path / "known_hosts"
    forged.write_text(known_hosts_line("127.0.0.1", host.port, other_public) + "\n")
    with pytest.raises(UnreachableHost, match="does not match"):
        shell_for(lab_project, host, known_hosts=str(forged))


def test_missing_known_hosts_file_is_refused(lab_project: LabProject, host, tmp_path: Path) -> None:
    with pytest.raises(UnreachableHost, match="does not exist"):
        shell_for(lab_project, host, known_hosts=str(tmp_path / "nope"))


def test_wrong_key_is_refused(lab_project: LabProject, host, tmp_path: Path) -> None:
    private, _ = make_ssh_key("stranger")
    key = tmp_path / "stranger"
    key.write_text(private)
    with pytest.raises(UnreachableHost, match="refused our key"):
        shell_for(lab_project, host, key=f"file:{key}")


def test_wrong_user_is_refused(lab_project: LabProject, host) -> None:
    with pytest.raises(UnreachableHost, match="refused our key"):
        shell_for(lab_project, host, user="nobody")


def test_closed_port_fails_fast_with_a_hint(lab_project: LabProject, host) -> None:
    t0 = time.monotonic()
    with pytest.raises(UnreachableHost, match="cannot reach") as info:
        shell_for(lab_project, host, port=free_ports(1)[0])
    assert time.monotonic() - t0 < 3
    assert "drillbook lab up" in info.value.hint


def test_not_a_key_is_a_clear_error(lab_project: LabProject, host, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("not a key at all")
    with pytest.raises(UnreachableHost, match="not an unencrypted"):
        shell_for(lab_project, host, key=f"file:{junk}")


def test_open_shell_picks_ssh_for_ssh_hosts(lab_project: LabProject, host) -> None:
    env = lab_project.env
    secret = lambda ref: SecretRef.parse(ref).resolve(lab_project.root)  # noqa: E731
    sh = open_shell(env, "lab-ssh", secret, Redactor(), lab_project.root)
    try:
        assert isinstance(sh, ssh.SSHShell)
        assert sh.run("echo $DRILLBOOK_LAB_DIR").stdout.strip() == str(lab_project.paths.root)
    finally:
        sh.close()


def test_authorized_key_rotation_helpers(lab_project: LabProject, host) -> None:
    """A new key logs in once added and is refused once removed; the lab's own key keeps working."""
    private, public = ssh.new_keypair("rotation-test")
    ok, why = ssh.try_login(host, private, lab_project.root)
    assert not ok and "refused our key" in why  # not authorized yet
    with shell_for(lab_project, host) as sh:
        ssh.authorized_keys_add(sh, host.authorized_keys, public)
        ssh.authorized_keys_add(sh, host.authorized_keys, public)  # idempotent
        file = lab_project.paths.ssh / "authorized_keys"
        assert file.read_text().count(public.split()[1]) == 1
        ok, why = ssh.try_login(host, private, lab_project.root)
        assert ok, why
        ssh.authorized_keys_remove(sh, host.authorized_keys, public)
        ok, why = ssh.try_login(host, private, lab_project.root)
        assert not ok and "refused our key" in why
        assert sh.run("true").ok
    client = (lab_project.paths.ssh / "client_key").read_text()
    assert ssh.try_login(host, client, lab_project.root) == (True, "")
