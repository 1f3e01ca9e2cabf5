"""The servers of a PostgreSQL service: commands on their hosts, and starting, stopping, fencing, promoting.

``Servers`` runs POSIX sh scripts on a node's host as the data directory's owner (through
the environment's shell, local or SSH), finds the binaries that match the data, writes the
per-node settings file, and controls each server with ``pg_ctl``.
"""
from __future__ import annotations

import shlex
import time
from datetime import datetime, timezone

import psycopg

from ...errors import DrillbookError
from ...shells.base import Result, Shell
from .connect import Connections, PostgresContext
from .conventions import FENCE_MARKER, NODE_CONF, choose_bin_dir, first_line
from .results import PostgresError


class Servers:
    """The service's servers, driven through the shells of their hosts (opened once per host)."""

    def __init__(self, context: PostgresContext, connections: Connections) -> None:
        self.context = context
        self.connections = connections
        self._shells: dict[str, Shell] = {}
        self._logins: dict[str, str] = {}
        self._owners: dict[str, str] = {}
        self._bins: dict[str, str] = {}

    def close(self) -> None:
        """Close the shells opened so far."""
        for shell in self._shells.values():
            shell.close()
        self._shells.clear()

    # ------------------------------------------------------------------ commands on the node's host
    def shell(self, host: str) -> Shell:
        if host not in self._shells:
            self._shells[host] = self.context.open_shell(host)
        return self._shells[host]

    def run(self, name: str, script: str, *, what: str, timeout: float = 120.0, input: str | None = None,
            check: bool = True) -> Result:
        """Run a POSIX sh script on the node's host as the data directory's owner.

        ``what`` names the operation in the error if it fails (with the last line of its output).
        """
        node = self.context.node(name)
        shell = self.shell(node.host)
        owner = self._owner(name)
        login = self._login(node.host)
        inner = f"cd / && sh -c {shlex.quote(script)}"
        if owner == login:
            command = inner
        elif login == "root":
            command = f"runuser -u {shlex.quote(owner)} -- sh -c {shlex.quote(inner)}"
        else:  # an operator's account with sudo rights to the database owner
            command = f"sudo -n -u {shlex.quote(owner)} -- sh -c {shlex.quote(inner)}"
        result = shell.run(command, timeout=timeout, input=input)
        if check and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise PostgresError(f"{what} failed on {self.context.name}/{name} (exit {result.exit_code})"
                                + (f": {detail[-1]}" if detail else ""),
                                "read the server log beside the data directory (<data_dir>.log)")
        return result

    def _login(self, host: str) -> str:
        if host not in self._logins:
            self._logins[host] = self.shell(host).run("id -un", timeout=30, check=True).stdout.strip()
        return self._logins[host]

    def owner(self, name: str) -> str:
        """The OS user that runs node ``name`` (the owner of its data directory)."""
        return self._owner(name)

    def _owner(self, name: str) -> str:
        """The OS user that owns the data directory (or, before it exists, its parent)."""
        if self.context.service.os_user:
            return self.context.service.os_user
        if name not in self._owners:
            data = shlex.quote(self.context.data_dir(name))
            out = self.shell(self.context.node(name).host).run(
                f"stat -c %U {data} 2>/dev/null || stat -c %U \"$(dirname {data})\"", timeout=30)
            if not out.ok or not out.stdout.strip():
                raise PostgresError(f"cannot find who owns the data directory of {self.context.name}/{name}",
                                    "set os_user for the service in the environment file")
            self._owners[name] = out.stdout.strip()
        return self._owners[name]

    def bin_dir(self, name: str) -> str:
        """Where pg_ctl & co live on the node's host: ``bin_dir``, else found, matching PG_VERSION."""
        if self.context.service.bin_dir:
            return self.context.path(self.context.service.bin_dir)
        host = self.context.node(name).host
        if host not in self._bins:
            self._bins[host] = self._discover_bin_dir(name)
        return self._bins[host]

    def _discover_bin_dir(self, name: str) -> str:
        script = (
            'want=$(cat "$1/PG_VERSION" 2>/dev/null); echo "want ${want:-}"; '
            'for d in "$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin /usr/pgsql-*/bin '
            '"$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")"; do '
            '[ -x "$d/pg_ctl" ] || continue; '
            'echo "have $("$d/pg_ctl" --version | sed -E \'s/^[^0-9]*([0-9]+).*/\\1/\') $d"; done')
        shell = self.shell(self.context.node(name).host)
        out = shell.run(f"sh -c {shlex.quote(script)} _ {shlex.quote(self.context.data_dir(name))}", timeout=30).stdout
        want = None
        candidates: list[tuple[int, str]] = []
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "want" and rest.strip().isdigit():
                want = int(rest)
            elif kind == "have":
                major, _, path = rest.partition(" ")
                if major.isdigit():
                    candidates.append((int(major), path))
        chosen = choose_bin_dir(candidates, want)
        if chosen is None:
            raise PostgresError(f"no PostgreSQL {want or ''} binaries found on host {self.context.node(name).host!r}",
                                "install them, or set bin_dir for the service in the environment file")
        return chosen

    def tool_path(self, name: str, tool: str) -> str:
        """The path of a PostgreSQL program (``pg_ctl``, ``initdb``…) on node ``name``'s host, quoted for sh."""
        return shlex.quote(f"{self.bin_dir(name)}/{tool}")

    # ------------------------------------------------------------------ server control
    def is_running(self, name: str) -> bool:
        data = shlex.quote(self.context.data_dir(name))
        result = self.run(name, f"{self.tool_path(name, 'pg_ctl')} status -D {data}",
                          what="pg_ctl status", check=False, timeout=30)
        return result.exit_code == 0

    def stop(self, name: str, mode: str = "immediate", timeout: float = 60.0) -> bool:
        """Stop a node (``immediate`` = the crash a drill injects; ``fast`` = clean). False if it was down."""
        if not self.is_running(name):
            return False
        self.run(name, f"{self.tool_path(name, 'pg_ctl')} stop -D {shlex.quote(self.context.data_dir(name))} -m {mode} "
                       f"-w -t {int(timeout)}", what=f"pg_ctl stop -m {mode}", timeout=timeout + 10)
        return True

    def start(self, name: str, timeout: float = 90.0) -> bool:
        """Start a node and wait until it accepts connections. False if it was already running."""
        if self.is_running(name):
            return False
        data = shlex.quote(self.context.data_dir(name))
        log = shlex.quote(self.context.data_dir(name) + ".log")
        result = self.run(name, f"{self.tool_path(name, 'pg_ctl')} start -D {data} -l {log} -w -t {int(timeout)}",
                          what="pg_ctl start", timeout=timeout + 10, check=False)
        if not result.ok and self.is_running(name):  # started meanwhile by another (a runbook stopped midway)
            self._wait_accepting(name, timeout)
            return False
        if not result.ok:
            tail = self.run(name, f"tail -n 3 {log}", what="read the server log", check=False).stdout.strip()
            raise PostgresError(f"pg_ctl start failed on {self.context.name}/{name}: "
                                f"{(tail.splitlines() or ['no log'])[-1]}",
                                f"read {self.context.data_dir(name)}.log")
        return True

    def _wait_accepting(self, name: str, timeout: float) -> None:
        """What ``pg_ctl start -w`` waits for: the node accepts connections (crash recovery done)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connections.connect(name, login="admin"):
                    return
            except psycopg.Error as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(f"{self.context.name}/{name} runs but refuses connections {timeout:g} s after "
                                        f"it started: {first_line(exc)}", f"read {self.context.data_dir(name)}.log") from None
                time.sleep(0.1)

    def reload(self, name: str) -> None:
        """Re-read configuration and TLS files (pg_ctl reload = SIGHUP); new connections see them."""
        self.run(name, f"{self.tool_path(name, 'pg_ctl')} reload -D {shlex.quote(self.context.data_dir(name))}",
                 what="pg_ctl reload", timeout=30)

    def fence(self, name: str, reason: str = "fenced by drillbook") -> None:
        """Stop the node if it runs and make sure a restart cannot make it a second primary.

        It gets ``standby.signal`` (if started, it stays read-only in recovery) and a marker saying
        why; ``rebuild_standby`` clears both. On a real host, also power-fence it (STONITH) when
        it is unreachable: this needs its shell.
        """
        self.stop(name, "immediate")
        data = shlex.quote(self.context.data_dir(name))
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        note = shlex.quote(f"{stamp} {reason}")
        self.run(name, f"test -f {data}/PG_VERSION && touch {data}/standby.signal && "
                       f"printf '%s\\n' {note} > {data}/{FENCE_MARKER}", what="fence", timeout=30)

    def is_fenced(self, name: str) -> bool:
        data = shlex.quote(self.context.data_dir(name))
        return self.run(name, f"test -f {data}/{FENCE_MARKER}", what="read fence marker", check=False,
                        timeout=30).exit_code == 0

    def fenced_quietly(self, name: str) -> bool:
        try:
            return self.is_fenced(name)
        except DrillbookError:
            return False

    def promote(self, name: str, timeout: float = 60.0) -> float:
        """pg_ctl promote the standby; return seconds until it accepted a write."""
        t0 = time.monotonic()
        self.run(name, f"{self.tool_path(name, 'pg_ctl')} promote -D {shlex.quote(self.context.data_dir(name))} -w "
                       f"-t {int(timeout)}", what="pg_ctl promote", timeout=timeout + 10)
        deadline = t0 + timeout
        while True:
            try:
                with self.connections.connect(name, login="admin") as conn:
                    conn.execute("CREATE TEMP TABLE drillbook_promoted (x int)")  # fails while read-only
                    return round(time.monotonic() - t0, 3)
            except psycopg.Error as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(f"{self.context.name}/{name} still refuses writes {timeout:g} s after promote: "
                                        f"{first_line(exc)}", f"read {self.context.data_dir(name)}.log") from None
                time.sleep(0.05)

    # ------------------------------------------------------------------ node configuration
    def write_node_conf(self, name: str, conf: str, extra: str = "", input: str | None = None,
                        data_dir: str | None = None) -> None:
        """Write the per-node settings file (``conf``) and include it from postgresql.conf, as the
        data directory's owner; ``extra`` is more sh run after it (reading ``input`` on stdin),
        ``data_dir`` another data directory than the node's own (a scratch instance)."""
        data = shlex.quote(data_dir or self.context.data_dir(name))
        include = shlex.quote(f"include_if_exists = '{NODE_CONF}'")
        script = (f"printf '%s' {shlex.quote(conf)} > {data}/{NODE_CONF} && "
                  f"(grep -q {NODE_CONF} {data}/postgresql.conf || printf '\\n%s\\n' {include} >> {data}/postgresql.conf)")
        if extra:
            script += f" && {extra}"
        self.run(name, script, what="write node configuration", input=input, timeout=30)
