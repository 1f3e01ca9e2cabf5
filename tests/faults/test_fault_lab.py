"""Each fault really happens and really heals, through real shells on this machine (and over the
lab's sshd): nftables drops loopback TCP, a process stops, a filesystem fills, stress-ng runs.

Needs root and nftables, fallocate and stress-ng (Debian ``nftables``, ``stress-ng``). Outside CI
a missing part skips; under ``CI=true`` it fails with what to install.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from drillbook.faults import disk, network, process, resource
from drillbook.faults.base import Active
from drillbook.faults.network import Endpoint
from drillbook.lab import control
from drillbook.lab.oslevel import lab_user
from drillbook.shells.local import LocalShell
from drillbook.shells.open import open_shell
from labsupport import LabProject, lab_project, require_sshd  # noqa: F401

pytestmark = pytest.mark.integration


def require(tool: str, package: str) -> None:
    if os.geteuid() != 0:
        why = "the fault tests need root (nftables, mounts)"
    elif shutil.which(tool) is None:
        why = f"{tool} is missing: apt-get install -y {package}"
    else:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


class Server:
    """A TCP server on a free loopback port that answers every message with "ok", ``delay`` s later."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            while conn.recv(64):
                time.sleep(self.delay)
                try:
                    conn.sendall(b"ok")
                except OSError:
                    return

    def close(self) -> None:
        self.sock.close()


ANSWER, SILENCE = 10.0, 0.4  # how long to wait for an answer that must come, and one that must not


def talks(port: int, sock: socket.socket | None = None, timeout: float = ANSWER) -> bool:
    """Does a new (or the given) connection to 127.0.0.1:port get its answer within ``timeout``?"""
    try:
        conn = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        conn.settimeout(timeout)
        conn.sendall(b"?")
        return conn.recv(8) == b"ok"
    except OSError:
        return False
    finally:
        if sock is None and "conn" in locals():
            conn.close()


def as_lab_user_talks(port: int, timeout: float = ANSWER) -> bool:
    """The same, from a process of the lab's OS user (how a standby's walreceiver is told apart)."""
    code = (f"import socket;s=socket.create_connection(('127.0.0.1',{port}),timeout={timeout});s.settimeout({timeout});"
            "s.sendall(b'?');raise SystemExit(0 if s.recv(8)==b'ok' else 1)")
    return subprocess.run(["runuser", "-u", lab_user(), "--", "python3", "-c", code], capture_output=True,
                          timeout=30).returncode == 0


def table(what: str) -> str:
    return network.table_name(Path("/nonexistent/fault-tests"), f"{what}_{uuid.uuid4().hex[:6]}")


def tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


# ----------------------------------------------------------------------------- network
def test_a_partition_drops_loopback_tcp_between_two_endpoints_and_heals() -> None:
    require("nft", "nftables")
    cut, other = Server(delay=0.3), Server()
    shell = LocalShell()
    held = socket.create_connection(("127.0.0.1", cut.port), timeout=ANSWER)  # established before the fault
    fault = network.Partition(Endpoint("127.0.0.1"), Endpoint("127.0.0.1", cut.port), table("cut"))
    active = Active(fault, shell)
    try:
        assert fault.check(shell) is None and talks(cut.port, held)
        held.sendall(b"?")  # the server answers after the partition began: that answer must not arrive
        active.inject()
        assert fault.table in tables()
        held.settimeout(0.3 + SILENCE)
        with pytest.raises(socket.timeout):
            held.recv(8)
        assert not talks(cut.port, timeout=SILENCE) and not talks(cut.port, held, timeout=SILENCE)
        assert talks(other.port)  # another port of the same address goes on
        active.heal()
        assert fault.table not in tables()
        assert talks(cut.port)
    finally:
        active.heal()
        held.close()
        cut.close()
        other.close()


def test_a_partition_by_user_cuts_that_users_processes_only() -> None:
    require("nft", "nftables")
    server = Server()
    shell = LocalShell()
    fault = network.Partition(Endpoint("127.0.0.1", user=lab_user()), Endpoint("127.0.0.1", server.port), table("user"))
    active = Active(fault, shell)
    try:
        assert as_lab_user_talks(server.port)
        active.inject()
        assert not as_lab_user_talks(server.port, timeout=SILENCE)
        assert talks(server.port)  # root's connections to the same port go on (the writer's, in a drill)
        active.heal()
        assert as_lab_user_talks(server.port)
    finally:
        active.heal()
        server.close()


def test_a_blocked_port_answers_no_one_until_healed() -> None:
    require("nft", "nftables")
    server = Server()
    fault = network.BlockPort(Endpoint("127.0.0.1", server.port), table("block"))
    active = Active(fault, LocalShell())
    try:
        active.inject()
        assert not talks(server.port, timeout=SILENCE) and not as_lab_user_talks(server.port, timeout=SILENCE)
        active.heal()
        assert talks(server.port)
    finally:
        active.heal()
        server.close()


def test_lab_up_and_down_remove_a_stale_table_of_this_project_only(lab_project: LabProject) -> None:  # noqa: F811
    require("nft", "nftables")
    ours = network.table_name(lab_project.root, "stale")
    foreign = f"faulttest_{uuid.uuid4().hex[:8]}"
    for name in (ours, foreign):
        subprocess.run(["nft", "add", "table", "inet", name], check=True)
    try:
        control.up(lab_project.root)
        assert ours not in tables() and foreign in tables()
    finally:
        subprocess.run(["nft", "delete", "table", "inet", foreign], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", ours], capture_output=True)


def test_over_ssh_as_the_lab_user_a_partition_is_not_applicable(lab_project: LabProject) -> None:  # noqa: F811
    require_sshd()
    env = lab_project.env
    shell = open_shell(env, "lab-ssh", lambda ref: _secret(lab_project.root, ref), _redactor(), lab_project.root)
    try:
        reason = network.BlockPort(Endpoint("127.0.0.1", 1), table("ssh")).check(shell)
        assert reason is not None and ("needs root" in reason or "nft is not installed" in reason)
    finally:
        shell.close()


# ----------------------------------------------------------------------------- process
@pytest.fixture
def sleeper():
    """A process of the lab's OS user with a name no one else uses, and a pid file naming it."""
    folder = Path(tempfile.mkdtemp(prefix="drillbook-sleeper-"))  # pytest's are 0700: the lab user must enter
    os.chmod(folder, 0o755)
    name = f"dbf{uuid.uuid4().hex[:10]}"
    binary = folder / name
    shutil.copy("/bin/sleep", binary)
    # Not through runuser: it stops itself when its child is stopped, and would stay stopped.
    proc = subprocess.Popen([str(binary), "300"], user=lab_user(), group=lab_user(), extra_groups=[], cwd="/")
    pidfile = folder / "sleeper.pid"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-x", "-u", lab_user(), name], capture_output=True, text=True).stdout.split()
        if found:
            pidfile.write_text(found[0] + "\n")
            break
        time.sleep(0.02)
    yield name, int(pidfile.read_text()), str(pidfile)
    subprocess.run(["pkill", "-CONT", "-x", name])
    subprocess.run(["pkill", "-KILL", "-x", name])
    proc.wait(10)
    shutil.rmtree(folder, ignore_errors=True)


RUNNING = ("S", "R")  # sleeping, or running for the moment it takes to go back to sleep


def state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_freeze_by_pid_file_really_stops_the_process_and_heals(sleeper) -> None:
    _, pid, pidfile = sleeper
    fault = process.Freeze(process.ByPidFile(pidfile))
    shell = LocalShell()
    active = Active(fault, shell)
    assert fault.check(shell) is None and state(pid) in RUNNING
    active.inject()
    assert state(pid) == "T"
    active.heal()
    assert state(pid) in RUNNING


def test_kill_by_name_under_a_user_really_kills(sleeper) -> None:
    name, pid, _ = sleeper
    shell = LocalShell()
    assert "no process found" in process.Kill(process.ByName(name, "root")).check(shell)  # not root's
    process.Kill(process.ByName(name, lab_user())).inject(shell)
    deadline = time.monotonic() + 10
    while state(pid) not in ("gone", "Z") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state(pid) in ("gone", "Z")


def test_freeze_over_ssh_acts_on_the_remote_host(lab_project: LabProject, sleeper) -> None:  # noqa: F811
    require_sshd()
    name, pid, _ = sleeper
    shell = open_shell(lab_project.env, "lab-ssh", lambda ref: _secret(lab_project.root, ref), _redactor(),
                       lab_project.root)
    active = Active(process.Freeze(process.ByName(name, lab_user())), shell)
    try:
        active.inject()
        assert state(pid) == "T"
        active.heal()
        assert state(pid) in RUNNING
    finally:
        active.heal()
        shell.close()


# ----------------------------------------------------------------------------- disk and resource
@pytest.fixture
def small_fs(tmp_path: Path):
    require("fallocate", "util-linux")
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_fill_reaches_the_brim_refuses_writes_and_heals(small_fs: Path) -> None:
    shell = LocalShell()
    fault = disk.Fill(str(small_fs), percent=100, tag="test")
    assert fault.check(shell) is None
    active = Active(fault, shell)
    active.inject()
    assert disk.usage(shell, str(small_fs)).available == 0
    with pytest.raises(OSError):
        (small_fs / "one-more").write_bytes(b"x" * 65536)
    active.heal()
    assert not (small_fs / ".drillbook-fill-test").exists()
    (small_fs / "one-more").write_bytes(b"x" * 65536)


def test_fill_refuses_the_root_filesystem() -> None:
    require("fallocate", "util-linux")
    assert "root filesystem" in disk.Fill("/").check(LocalShell())


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except FileNotFoundError:
        return ""


def test_stress_runs_and_its_heal_stops_it() -> None:
    require("stress-ng", "stress-ng")
    shell = LocalShell()
    fault = resource.Stress(cpu=1, seconds=30, tag=f"t{uuid.uuid4().hex[:6]}")
    active = Active(fault, shell)
    try:
        pid = int(active.inject().rsplit(" ", 1)[1])
        # The pid is known as soon as the process is forked; its command line shows stress-ng once it
        # has executed it (until then /proc shows an empty one): wait, bounded, for that.
        deadline = time.monotonic() + 10
        while "stress-ng" not in _cmdline(pid) and state(pid) not in ("gone", "Z") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state(pid) not in ("gone", "Z") and "stress-ng" in _cmdline(pid)
        active.heal()
        deadline = time.monotonic() + 10
        while state(pid) not in ("gone", "Z") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state(pid) in ("gone", "Z")
    finally:
        active.heal()


def _secret(project: Path, ref: str) -> str:
    from drillbook.config.secrets import SecretRef

    return SecretRef.parse(ref).resolve(project)


def _redactor():
    from drillbook.config.secrets import Redactor

    return Redactor()


def test_lab_down_unmounts_a_scratch_filesystem_a_dead_run_left(lab_project: LabProject) -> None:  # noqa: F811
    require("nft", "nftables")  # root
    mount = lab_project.paths.data / "scratch" / f"diskfull-test{uuid.uuid4().hex[:6]}-wal"
    # As the lab's user, as a drill makes it: a scratch/ owned by root would lock the lab's user out.
    subprocess.run(["runuser", "-u", lab_user(), "--", "mkdir", "-p", str(mount)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        from drillbook.lab.leftovers import unmount_scratch

        said: list[str] = []
        assert unmount_scratch(lab_project.paths, said.append) == [str(mount.resolve())]
        assert str(mount.resolve()) not in Path("/proc/self/mounts").read_text() and said[0].startswith("unmounted")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
        mount.rmdir()
