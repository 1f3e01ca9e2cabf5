"""The fault library's planning and cleanup logic, with a fake shell (no root, no lab needed).

A real ``Drill`` runs in-process against a temporary project; only the host's shell is fake, so
what is asserted is what the fault would run on a host, in what order, and what the journal says.
"""
from __future__ import annotations

import json
from pathlib import Path

import drillbook
import pytest
from conftest import Project
from drillbook import faults
from drillbook.errors import CheckFailed, GateNotApproved
from drillbook.faults import disk, network, process, resource
from drillbook.faults.network import Endpoint
from fakeshell import FakeShell

pytestmark = pytest.mark.filterwarnings("ignore:No kernel detected:UserWarning")


@pytest.fixture(autouse=True)
def _forget_current_drill():
    yield
    import drillbook.drill

    drillbook.drill._current = None


def journal(run_dir: Path) -> dict:
    return json.loads((run_dir / "journal.json").read_text())


def start(shell: FakeShell | None, **kwargs: object) -> drillbook.Drill:
    drill = drillbook.start(env="local", **{"dry_run": False, "approve": ["fault"], **kwargs})
    if shell is None:
        def refuse(host: str) -> FakeShell:
            raise AssertionError(f"a dry run opened a shell on {host}")
        drill.shell = refuse  # type: ignore[method-assign]
    else:
        drill.shell = lambda host: shell  # type: ignore[method-assign]
    return drill


def partition(project: Path) -> network.Partition:
    return network.Partition(Endpoint("127.0.0.1", user="postgres"), Endpoint("127.0.0.1", 5433),
                             network.table_name(project, "standby"))


def nft_tables(*names: str) -> tuple[int, str]:
    return 0, "".join(f"table inet {n}\n" for n in names)


# ----------------------------------------------------------------------------- inject: dry run, not applicable, order
def test_dry_run_prints_the_plan_and_opens_no_shell(run_dir: Path, project: Project) -> None:
    drill = start(None, dry_run=True)
    assert faults.inject(drill, partition(project.root), host="here") is None
    drill.finish()
    step = journal(run_dir)["steps"][0]
    assert step["status"] == "dry-run" and "drop TCP between 127.0.0.1" in step["detail"]
    assert journal(run_dir)["cleanups"] == []


def test_without_root_a_partition_is_not_applicable_never_passed(run_dir: Path, project: Project) -> None:
    shell = FakeShell({r"^id -u$": (0, "1000\n")})
    drill = start(shell)
    assert faults.inject(drill, partition(project.root), host="here") is None
    drill.finish()
    step = journal(run_dir)["steps"][0]
    assert step["status"] == "not-applicable" and "needs root" in step["detail"] and "here" in step["detail"]
    assert not shell.ran("^nft -f") and journal(run_dir)["cleanups"] == []


def test_missing_nft_is_not_applicable(run_dir: Path, project: Project) -> None:
    drill = start(FakeShell({r"^command -v nft": (1, "")}))
    faults.inject(drill, partition(project.root), host="here")
    drill.finish()
    assert "nft is not installed" in journal(run_dir)["steps"][0]["detail"]


class Recorder:
    """A fault that notes what happened, and whether its heal was registered when it acted."""

    title = "Recorded fault"

    def __init__(self, drill: drillbook.Drill, fail: BaseException | None = None) -> None:
        self.drill, self.fail, self.events = drill, fail, []

    def plan(self) -> str:
        return "record"

    def check(self, shell: FakeShell) -> None:
        return None

    def inject(self, shell: FakeShell) -> str:
        self.events.append(("inject", len(self.drill._cleanups._pending)))
        if self.fail:
            raise self.fail
        return "done"

    def heal(self, shell: FakeShell) -> str:
        self.events.append(("heal", None))
        return "healed"


@pytest.mark.parametrize("fail", [None, RuntimeError("half done"), KeyboardInterrupt()])
def test_the_heal_is_registered_before_the_fault_acts_and_always_runs(run_dir: Path, fail: BaseException | None) -> None:
    drill = start(FakeShell())
    fault = Recorder(drill, fail)
    if fail is None:
        faults.inject(drill, fault, host="here")
        drill.finish()
    else:
        with pytest.raises(type(fail)):
            faults.inject(drill, fault, host="here")
        drill.fail(fail)  # what the kernel's cell hook does
    assert fault.events == [("inject", 1), ("heal", None)]  # one cleanup pending when it acted
    cleanup = journal(run_dir)["cleanups"][0]
    assert cleanup["title"] == "heal: Recorded fault" and cleanup["status"] == "passed"
    assert journal(run_dir)["status"] == {None: "passed", RuntimeError: "error", KeyboardInterrupt: "aborted"}[
        type(fail) if fail else None]


def test_a_refused_gate_injects_nothing_and_the_heal_knows(run_dir: Path) -> None:
    drill = start(FakeShell(), approve=[])
    fault = Recorder(drill)
    with pytest.raises(GateNotApproved):
        faults.inject(drill, fault, host="here")
    drill.fail(GateNotApproved("x"))
    assert fault.events == []  # neither injected nor healed: nothing happened
    assert journal(run_dir)["cleanups"][0]["status"] == "passed"


def test_active_heals_once_whoever_asks_first() -> None:
    shell = FakeShell({r"^nft list tables": nft_tables("drillbook_x_y")})
    fault = network.BlockPort(Endpoint("127.0.0.1", 5432), "drillbook_x_y")
    active = faults.Active(fault, shell)
    assert "never injected" in active.heal()
    active = faults.Active(fault, shell)
    active.inject()
    assert "deleted" in active.heal() and active.heal() == "already healed"
    assert len(shell.ran("^nft delete table inet drillbook_x_y$")) == 2  # the stale one before, ours after


# ----------------------------------------------------------------------------- network
def test_partition_rules_drop_both_directions_and_tell_clients_apart_by_user(project: Project) -> None:
    shell = FakeShell({r"^id -u postgres$": (0, "107\n")})
    fault = partition(project.root)
    fault.inject(shell)
    script = shell.inputs[shell.commands.index("nft -f -")]
    table = network.table_name(project.root, "standby")
    assert script.startswith(f"table inet {table} {{") and table.startswith("drillbook_")
    output, inbound = script.split("chain output")[1].split("chain input")
    assert "tcp dport 5433 meta skuid 107 add @peers { ip saddr . tcp sport } drop" in output
    assert "tcp sport 5433 ip daddr . tcp dport @peers drop" in output and "skuid" not in inbound
    assert "tcp sport 5433 ip daddr . tcp dport @peers drop" in inbound


def test_partition_by_address_drops_in_input_too_and_blockport_drops_everything() -> None:
    fault = network.Partition(Endpoint("10.0.0.2"), Endpoint("10.0.0.1", 5432), "drillbook_t_p")
    body = fault.body(FakeShell())
    assert body.count("ip saddr 10.0.0.2 ip daddr 10.0.0.1 tcp dport 5432 add @peers") == 2  # output and input
    block = network.BlockPort(Endpoint("127.0.0.1", 6379), "drillbook_t_b").body(FakeShell())
    assert block.count("ip daddr 127.0.0.1 tcp dport 6379 drop") == 2
    assert block.count("ip saddr 127.0.0.1 tcp sport 6379 drop") == 2


@pytest.mark.parametrize("bad", [lambda: Endpoint("127.0.0.1; flush ruleset"), lambda: Endpoint("::1", 70000),
                                 lambda: Endpoint("127.0.0.1", user="x; rm"),
                                 lambda: network.Partition(Endpoint("::1"), Endpoint("127.0.0.1", 1), "drillbook_a"),
                                 lambda: network.Partition(Endpoint("127.0.0.1"), Endpoint("127.0.0.1"), "drillbook_a")])
def test_endpoints_that_could_inject_rules_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        bad()


def test_table_names_are_per_project_and_lab_cleanup_touches_only_ours(tmp_path: Path) -> None:
    ours = network.table_name(tmp_path / "a", "standby")
    theirs = network.table_name(tmp_path / "b", "standby")
    assert ours != theirs
    shell = FakeShell({r"^nft list tables": nft_tables("filter", ours, theirs, "drillbook", "nat")})
    assert network.remove_tables(shell, tmp_path / "a") == [ours]
    assert shell.ran("^nft delete") == [f"nft delete table inet {ours}"]
    assert not network.delete_table(FakeShell({r"^nft list tables": nft_tables("filter")}), "filter")


def test_heal_of_a_table_already_gone_says_so() -> None:
    shell = FakeShell({r"^nft list tables": nft_tables()})
    assert "was not there" in network.BlockPort(Endpoint("127.0.0.1", 1), "drillbook_z").heal(shell)
    assert not shell.ran("^nft delete")


# ----------------------------------------------------------------------------- process
def test_freeze_continues_exactly_the_processes_it_stopped() -> None:
    children = {"100": "101\n102\n", "101,102": "103\n", "103": ""}
    shell = FakeShell({r"^head -n 1 ": (0, "100\n"), r"^pgrep -P (\S+)$": lambda cmd, _: (0, children[cmd.split()[-1]])})
    fault = process.Freeze(process.ByPidFile("/data/postmaster.pid", tree=True))
    assert fault.check(shell) is None
    assert fault.inject(shell) == "SIGSTOP sent to 100, 101, 102, 103"
    shell.answers = {r"^kill -0 102$": (1, ""), **shell.answers}  # one of them exited meanwhile
    assert fault.heal(shell) == "SIGCONT sent to 100, 101, 103"
    assert shell.ran("^kill -CONT") == ["kill -CONT 100 101 103"]


def test_kill_by_name_and_its_way_back() -> None:
    shell = FakeShell({r"^pgrep -x -u redis redis-server$": (0, "4242\n")})
    fault = process.Kill(process.ByName("redis-server", "redis"), signal="TERM", restart="systemctl start redis")
    fault.inject(shell)
    assert shell.ran("^kill") == ["kill -TERM 4242"]
    assert fault.heal(shell) == "ran systemctl start redis"
    assert "drill's own cleanup" in process.Kill(process.ByName("x", "y")).heal(FakeShell())
    with pytest.raises(ValueError):
        process.Kill(process.ByName("x", "y"), signal="STOP")


def test_a_missing_process_or_systemd_is_not_applicable() -> None:
    shell = FakeShell({r"^pgrep": (1, ""), r"^test -d /run/systemd/system": (1, "")})
    assert "no process found" in process.Freeze(process.ByName("nothing", "root")).check(shell)
    assert "systemd does not run" in process.Kill(process.ByUnit("postgresql.service")).check(shell)
    assert "systemd does not run" in process.RestartService("postgresql.service").check(shell)
    with pytest.raises(ValueError):
        process.ByUnit("x; reboot")


# ----------------------------------------------------------------------------- disk
def df(mount: str, size: int, used: int, avail: int) -> tuple[int, str]:
    return 0, f"tmpfs {size} {used} {avail} 10% {mount}\n"


def test_fill_is_bounded_by_percent_available_and_max_bytes() -> None:
    usage = disk.Usage("/wal", size=1000, used=100, available=900)
    assert usage.to_fill(50, 10_000) == 400
    assert usage.to_fill(100, 10_000) == 900
    assert usage.to_fill(100, 300) == 300
    assert usage.to_fill(5, 10_000) == 0


def test_fill_never_touches_the_root_filesystem() -> None:
    shell = FakeShell({r"^df -P -B1 /data": df("/", 10**9, 10**8, 9 * 10**8), r"^df -P -B1 /": df("/", 10**9, 0, 0)})
    assert "root filesystem" in disk.Fill("/data/pg_wal").check(shell)
    same_device = FakeShell({r"^df -P -B1 '?/wal": df("/wal", 100, 0, 100), r"^df -P -B1 /": df("/", 10**9, 0, 0)})
    assert "root filesystem" in disk.Fill("/wal").check(same_device)  # the fake's test of stat says "same device"


def test_fill_reserves_one_named_file_and_the_heal_removes_it() -> None:
    shell = FakeShell({r"^df -P -B1 /wal": df("/wal", 64 << 20, 16 << 20, 48 << 20), r"^df -P -B1 / ": df("/", 10**9, 0, 0),
                       r"^test ": (1, "")})
    fault = disk.Fill("/wal/pg_wal", percent=100, max_bytes=32 << 20, tag="t1")
    assert fault.check(shell) is None
    fault.inject(shell)
    assert shell.ran("^fallocate") == [f"fallocate -l {32 << 20} /wal/.drillbook-fill-t1"]
    assert fault.heal(shell) == "removed /wal/.drillbook-fill-t1"
    assert disk.Fill("/x").heal(FakeShell()) == "no file was reserved"
    with pytest.raises(ValueError):
        disk.Fill("/x", tag="../etc")


# ----------------------------------------------------------------------------- resource
def test_stress_is_bounded_in_time_and_healed_by_its_pid() -> None:
    fault = resource.Stress(cpu=2, vm=1, vm_bytes=64 << 20, seconds=5, tag="t")
    assert fault.argv()[:3] == ["stress-ng", "--timeout", "5s"] and "--vm-bytes" in fault.argv()
    shell = FakeShell({r"nohup setsid stress-ng": (0, "777\n"), r"^test -f /tmp/drillbook-stress-t.pid": (0, "777\n")})
    assert fault.inject(shell) == "stress-ng running as pid 777"
    assert "stopped" in fault.heal(shell)
    with pytest.raises(ValueError):
        resource.Stress(seconds=resource.MAX_SECONDS + 1)
    with pytest.raises(ValueError):
        resource.Stress(cpu=0, vm=0)


def test_a_drill_that_ends_failed_still_heals(run_dir: Path) -> None:
    drill = start(FakeShell())
    fault = Recorder(drill)
    faults.inject(drill, fault, host="here")
    drill.check("something measured", False)
    with pytest.raises(CheckFailed):
        drill.finish()
    assert fault.events[-1] == ("heal", None) and journal(run_dir)["status"] == "failed"


def test_open_connections_of_the_client_are_cut_at_once() -> None:
    ss = ("0 0 127.0.0.1:40001 127.0.0.1:5433 uid:107 ino:1 sk:1\n"
          "0 0 127.0.0.1:40002 127.0.0.1:5433 uid:0 ino:2 sk:2\n"
          "0 0 10.0.0.9:40003 127.0.0.1:5433 uid:107 ino:3 sk:3\n")
    shell = FakeShell({r"^ss -Htne state established dst 127.0.0.1:5433$": (0, ss), r"^id -u postgres$": (0, "107\n")})
    client, server = Endpoint("127.0.0.1", user="postgres"), Endpoint("127.0.0.1", 5433)
    assert network.established(shell, client, server, 107) == [("127.0.0.1", 40001)]
    assert network.established(shell, Endpoint("127.0.0.1"), server, None) == [("127.0.0.1", 40001), ("127.0.0.1", 40002)]
    body = network.Partition(client, server, "drillbook_t_s").body(shell)
    assert "elements = { 127.0.0.1 . 40001 }" in body
